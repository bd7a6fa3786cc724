# The general allocator's multithreaded tests run under ThreadSanitizer in CI.
if(TEST unit.core_threads)
  set_tests_properties(unit.core_threads unit.core_fork unit.core_xcache unit.core_pages PROPERTIES LABELS threads)
endif()
