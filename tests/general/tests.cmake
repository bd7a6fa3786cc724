# Tests of the general allocator through the standard names: conformance,
# C++ operators, threads/fork/thread-exit stress, real programs under
# LD_PRELOAD, and the bench workloads as a correctness run. They need the
# override layer (targets heapkit / heapkit_static), so all sit behind
# if(TARGET heapkit).
#
# Sanitizer builds: ASan/TSan runtimes own malloc themselves, so neither a
# preloaded nor a statically linked heapkit can be the allocator there. In
# those builds only the *_hk variants run: the same stress/fork/thread-exit
# programs calling the hk_ names, linked to heapkit_base (instrumented).
if(TARGET heapkit)
  set(HK_GEN_DIR ${CMAKE_CURRENT_LIST_DIR})
  set(HK_GEN_INC ${CMAKE_CURRENT_SOURCE_DIR}/tests ${HK_GEN_DIR})

  function(hk_general_test name src)
    cmake_parse_arguments(A "" "" "LIBS;DEFS;LABELS;ENV" ${ARGN})
    add_executable(general_${name} ${src})
    target_include_directories(general_${name} PRIVATE ${HK_GEN_INC})
    target_link_libraries(general_${name} PRIVATE ${A_LIBS} Threads::Threads ${CMAKE_DL_LIBS})
    if(A_DEFS)
      target_compile_definitions(general_${name} PRIVATE ${A_DEFS})
    endif()
    string(REPLACE "_" "-" tname ${name})
    add_test(NAME general.${tname} COMMAND general_${name})
    set_tests_properties(general.${tname} PROPERTIES TIMEOUT 120)
    if(A_LABELS)
      set_tests_properties(general.${tname} PROPERTIES LABELS "${A_LABELS}")
    endif()
    if(A_ENV)
      set_tests_properties(general.${tname} PROPERTIES ENVIRONMENT "${A_ENV}")
    endif()
  endfunction()

  # hk_ names, instrumented with whatever sanitizer the build uses
  foreach(t stress fork thread_exit)
    hk_general_test(${t}_hk ${HK_GEN_DIR}/${t}.c LIBS heapkit_base DEFS HK_TEST_HK_NAMES=1 LABELS threads)
  endforeach()

  if(NOT HK_SANITIZE)
    # standard names with libheapkit.a linked in
    hk_general_test(conformance_static ${HK_GEN_DIR}/conformance.c LIBS heapkit_static DEFS HK_LINKED=1)
    hk_general_test(new_delete ${HK_GEN_DIR}/new_delete.cpp LIBS heapkit_static)
    # clang declares the sized operator delete only when asked
    target_compile_options(general_new_delete PRIVATE -fsized-deallocation)
    foreach(t stress fork thread_exit)
      hk_general_test(${t}_static ${HK_GEN_DIR}/${t}.c LIBS heapkit_static LABELS threads)
    endforeach()
    # a plain program with libheapkit.so preloaded
    hk_general_test(conformance_preload ${HK_GEN_DIR}/conformance.c
                    ENV "LD_PRELOAD=$<TARGET_FILE:heapkit>;HK_EXPECT_HEAPKIT=1")
    foreach(t stress thread_exit)
      hk_general_test(${t}_preload ${HK_GEN_DIR}/${t}.c LABELS threads ENV "LD_PRELOAD=$<TARGET_FILE:heapkit>")
    endforeach()
    # the code a running program reaches stays in the first of the library's
    # two executable mappings
    hk_general_test(resident_code ${HK_GEN_DIR}/resident_code.c ENV "LD_PRELOAD=$<TARGET_FILE:heapkit>")

    # real Debian programs, system allocator vs heapkit, identical output
    foreach(p python sort sqlite git shell)
      add_test(NAME general.real.${p} COMMAND bash ${HK_GEN_DIR}/real_program.sh ${p} $<TARGET_FILE:heapkit>)
      set_tests_properties(general.real.${p} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
    endforeach()

    # the benchmark workloads as a correctness run (small scale, no timing
    # judged): each checks its own payloads and must print the same line on
    # heapkit as on glibc
    if(TARGET bench_small)
      add_test(NAME general.bench-workloads
               COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/bench/run.py --reps 1 --scale 0.05
                       --allocators glibc,heapkit ${CMAKE_BINARY_DIR})
      set_tests_properties(general.bench-workloads PROPERTIES TIMEOUT 180)
    endif()
  endif()
endif()

# The public API of every component, through libheapkit.so.
if(TARGET heapkit AND NOT HK_SANITIZE)
  add_executable(general_shared_api ${CMAKE_CURRENT_LIST_DIR}/shared_api.c)
  target_include_directories(general_shared_api PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(general_shared_api PRIVATE heapkit)
  add_test(NAME general.shared-api COMMAND general_shared_api)
endif()

# libheapkit.so loaded late with dlopen.
if(TARGET heapkit AND NOT HK_SANITIZE)
  add_executable(general_dlopen ${CMAKE_CURRENT_LIST_DIR}/dlopen.c)
  target_include_directories(general_dlopen PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(general_dlopen PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
  add_dependencies(general_dlopen heapkit)
  add_test(NAME general.dlopen COMMAND general_dlopen $<TARGET_FILE:heapkit>)
endif()

# The `heapkit run` command.
if(TARGET heapkit AND TARGET heapkit_cli AND NOT HK_SANITIZE)
  add_test(NAME general.run-command COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_cmd.sh $<TARGET_FILE:heapkit_cli>)
endif()
