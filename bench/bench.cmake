# Benchmark workloads: plain programs using the standard malloc family, so
# bench/run.sh can swap allocators with LD_PRELOAD. Not linked to heapkit.
file(GLOB HK_BENCH_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/wl_*.c)
foreach(src ${HK_BENCH_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  string(REGEX REPLACE "^wl_" "" name ${name})
  add_executable(bench_${name} ${src})
  target_link_libraries(bench_${name} PRIVATE Threads::Threads)
  set_target_properties(bench_${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench OUTPUT_NAME ${name})
endforeach()
