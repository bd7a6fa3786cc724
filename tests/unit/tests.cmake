# Labels for unit tests that run many threads (CI runs them under TSan).
foreach(t heap slab_home)
  if(TEST unit.${t})
    set_tests_properties(unit.${t} PROPERTIES LABELS threads)
  endif()
endforeach()
