# The general allocator's multithreaded tests run under ThreadSanitizer in CI
# (core_misuse too: its threaded load of bad pointers found a flags race;
# core_check: a worker frees the main thread's blocks and checks its heap).
if(TEST unit.core_threads)
  set_tests_properties(unit.core_threads unit.core_fork unit.core_xcache unit.core_pages unit.core_misuse unit.core_check PROPERTIES LABELS threads)
endif()
