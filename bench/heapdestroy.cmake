# Destroying a private heap of 1 M small blocks against freeing them one by
# one (bench/heapdestroy/run.sh BUILD_DIR runs it).
add_executable(bench_heapdestroy ${CMAKE_CURRENT_LIST_DIR}/heapdestroy/bench_heapdestroy.c)
target_link_libraries(bench_heapdestroy PRIVATE heapkit_base Threads::Threads)
target_compile_options(bench_heapdestroy PRIVATE -O2)
