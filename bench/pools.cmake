# Benchmarks for pools, slabs, tpools and arenas against malloc/free
# (bench/pools/run.sh BUILD_DIR runs them). Linked statically against the
# base library, so LD_PRELOAD of another malloc changes only the baseline.
add_executable(bench_pools ${CMAKE_CURRENT_LIST_DIR}/pools/bench_pools.c)
target_link_libraries(bench_pools PRIVATE heapkit_base Threads::Threads)
target_compile_options(bench_pools PRIVATE -O2)
