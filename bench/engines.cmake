# Latency of the classic engines as the heap grows (bench/engines/latency.c).
add_executable(bench_engine_latency ${CMAKE_CURRENT_LIST_DIR}/engines/latency.c)
target_link_libraries(bench_engine_latency PRIVATE heapkit_base)
