# Multithreaded pool tests (per-thread pools, slab magazines, locked pools):
# labelled "threads" so CI also runs them under ThreadSanitizer.
add_executable(test_pool_threads ${CMAKE_CURRENT_LIST_DIR}/threads.c)
target_include_directories(test_pool_threads PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tests)
target_link_libraries(test_pool_threads PRIVATE heapkit_base m)
add_test(NAME pool.threads COMMAND test_pool_threads)
set_tests_properties(pool.threads PROPERTIES LABELS threads TIMEOUT 300)
