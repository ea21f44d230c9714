# Backup and restore tools (issue 6).  include(ops.cmake) from
# tools/CMakeLists.txt; binaries land in build/bin like every tool.
foreach(tool backup restore)
  add_executable(stemedb-${tool} ${CMAKE_CURRENT_LIST_DIR}/${tool}.c)
  target_link_libraries(stemedb-${tool} PRIVATE stemedb_core)
endforeach()
