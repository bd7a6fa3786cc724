# The trace lab and cross-engine suites.
#
# The eleven engines every build must have: one API-suite entry each, which
# fails when the named engine is not linked in.
set(HK_ENGINE_NAMES implicit-first implicit-next implicit-best implicit-worst implicit-deferred
    explicit-lifo explicit-addr segregated buddy tlsf hole-index)
if(TARGET test_engine_api)
  foreach(e ${HK_ENGINE_NAMES})
    add_test(NAME engine_api.${e} COMMAND test_engine_api ${e})
  endforeach()
endif()
if(TARGET test_engine_property)
  foreach(e ${HK_ENGINE_NAMES})
    add_test(NAME engine_property.${e} COMMAND test_engine_property ${e})
  endforeach()
endif()

# Command-line tests of the heapkit binary (gen, replay, lab, bad traces).
if(TARGET heapkit_cli)
  find_program(HK_PYTHON3 python3)
  add_test(NAME lab.cli COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_lab_tests.sh $<TARGET_FILE:heapkit_cli>
           ${CMAKE_CURRENT_LIST_DIR} ${CMAKE_CURRENT_BINARY_DIR}/lab-tests)
  set(HK_LAB_ENV "HK_SHARED_TRACES=${HK_SHARED_TRACES};HK_PYTHON3=${HK_PYTHON3}")
  if(HK_SANITIZE)
    list(APPEND HK_LAB_ENV "HK_LAB_QUICK=1")
  endif()
  set_tests_properties(lab.cli PROPERTIES ENVIRONMENT "${HK_LAB_ENV}")
endif()
