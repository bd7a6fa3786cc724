# The general allocator's multithreaded tests run under ThreadSanitizer in CI
# (core_misuse too: its threaded load of bad pointers found a flags race).
if(TEST unit.core_threads)
  set_tests_properties(unit.core_threads unit.core_fork unit.core_xcache unit.core_pages unit.core_misuse PROPERTIES LABELS threads)
endif()
