# Install the build into a temporary prefix and build/run consumers against it.
# cmake -DBUILD_DIR= -DSRC= -DWORK= -DCC= -DCXX= -DPKG_CONFIG= -DGENERATOR= -DMAKE_PROGRAM= -DEXTRA_FLAGS=
#       -DINSTALL_RPATH= -P run-consumer.cmake
# INSTALL_RPATH is the build's CMAKE_INSTALL_RPATH: "$ORIGIN/..." by default, empty in a
# distribution build (-DVMWKVM_INSTALL_RPATH=OFF, debian/rules), where the library sits in the
# system's search path; the installed programs then carry no RUNPATH and are run here with
# LD_LIBRARY_PATH pointing at the prefix, as the system's loader path would.
cmake_policy(VERSION 3.25)

function(run)
  cmake_parse_arguments(R "" "WHAT" "CMD" ${ARGN})
  execute_process(COMMAND ${R_CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${R_WHAT} failed (${rc}):\n${R_CMD}\n${out}\n${err}")
  endif()
  set(RUN_OUT "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(PREFIX ${WORK}/prefix)
separate_arguments(extra UNIX_COMMAND "${EXTRA_FLAGS}")

# 1. install
run(WHAT "cmake --install" CMD ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})

# 2. layout
file(GLOB_RECURSE pcs ${PREFIX}/*vmwkvm.pc)
list(LENGTH pcs npc)
if(NOT npc EQUAL 1)
  message(FATAL_ERROR "consumer test: expected one installed vmwkvm.pc, found: ${pcs}")
endif()
get_filename_component(pcdir ${pcs} DIRECTORY)
get_filename_component(libdir ${pcdir} DIRECTORY)
file(GLOB reallib ${libdir}/libvmwkvm.so.*.*.*)
foreach(f ${reallib} ${libdir}/libvmwkvm.so.0 ${libdir}/libvmwkvm.so
          ${PREFIX}/include/vmwkvm/vmwkvm.h ${PREFIX}/include/vmwkvm/version.h ${PREFIX}/include/vmwkvm/probe.h
          ${libdir}/cmake/vmwkvm/vmwkvmConfig.cmake ${libdir}/cmake/vmwkvm/vmwkvmConfigVersion.cmake
          ${libdir}/cmake/vmwkvm/vmwkvmTargets.cmake)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "consumer test: not installed: ${f}")
  endif()
endforeach()
if(EXISTS ${BUILD_DIR}/tools/probe/vmwkvm-probe)
  foreach(f ${PREFIX}/bin/vmwkvm-probe ${PREFIX}/share/man/man1/vmwkvm-probe.1)
    if(NOT EXISTS ${f})
      message(FATAL_ERROR "consumer test: not installed: ${f}")
    endif()
  endforeach()
endif()
if(NOT reallib)
  message(FATAL_ERROR "consumer test: no libvmwkvm.so.X.Y.Z in ${libdir}")
endif()
find_program(READELF readelf)
if(READELF)
  run(WHAT "readelf -d" CMD ${READELF} -d ${reallib})
  if(NOT RUN_OUT MATCHES "Library soname: \\[libvmwkvm\\.so\\.0\\]")
    message(FATAL_ERROR "consumer test: SONAME of ${reallib} is not libvmwkvm.so.0:\n${RUN_OUT}")
  endif()
endif()
file(READ ${PREFIX}/include/vmwkvm/version.h vh)
string(REGEX MATCH "VMWKVM_VERSION_STRING \"([0-9.]+)\"" _ "${vh}")
message(STATUS "installed libvmwkvm ${CMAKE_MATCH_1}: ${reallib}")

# 2b. installed programs run from the prefix, without LD_LIBRARY_PATH (RUNPATH $ORIGIN/...)
# run_prog(WHAT ... STATUS <accepted exit codes> CMD ...): run with LD_LIBRARY_PATH unset
# (RUNPATH build) or set to the prefix's libdir only (distribution build, no RUNPATH).
if(INSTALL_RPATH)
  set(prog_env --unset=LD_LIBRARY_PATH)
else()
  set(prog_env LD_LIBRARY_PATH=${libdir})
endif()
function(run_prog)
  cmake_parse_arguments(R "" "WHAT" "STATUS;CMD" ${ARGN})
  execute_process(COMMAND ${CMAKE_COMMAND} -E env ${prog_env} ${R_CMD}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc IN_LIST R_STATUS)
    message(FATAL_ERROR "consumer test: installed ${R_WHAT} exited ${rc} (want ${R_STATUS}):\n"
                        "${R_CMD}\n${out}\n${err}")
  endif()
  set(RUN_OUT "${out}" PARENT_SCOPE)
  set(RUN_ERR "${err}" PARENT_SCOPE)
  set(RUN_RC "${rc}" PARENT_SCOPE)
endfunction()
if(EXISTS ${PREFIX}/bin/vmwkvm-minivmm)
  set(kvm_ok FALSE)
  if(EXISTS /dev/kvm)
    set(kvm_ok TRUE)
  endif()
  if(READELF)
    foreach(prog vmwkvm-probe vmwkvm-minivmm)
      run(WHAT "readelf -d ${prog}" CMD ${READELF} -d ${PREFIX}/bin/${prog})
      if(INSTALL_RPATH AND NOT RUN_OUT MATCHES "\\(RUNPATH\\)[^\n]*\\$ORIGIN/")
        message(FATAL_ERROR "consumer test: ${prog} has no $ORIGIN-relative RUNPATH:\n${RUN_OUT}")
      elseif(NOT INSTALL_RPATH AND RUN_OUT MATCHES "\\((RUNPATH|RPATH)\\)")
        message(FATAL_ERROR "consumer test: distribution build, but ${prog} has a RUNPATH:\n${RUN_OUT}")
      endif()
    endforeach()
  endif()
  # vmwkvm-probe: 0 = usable, 1 = not usable (no /dev/kvm); either way a JSON report
  run_prog(WHAT "vmwkvm-probe --json" STATUS 0 1 CMD ${PREFIX}/bin/vmwkvm-probe --json)
  if(NOT RUN_OUT MATCHES "^[ \n]*{.*}[ \n]*$" OR NOT RUN_OUT MATCHES "\"kvm_usable\": (true|false)")
    message(FATAL_ERROR "consumer test: vmwkvm-probe --json printed no JSON report:\n${RUN_OUT}\n${RUN_ERR}")
  endif()
  if(kvm_ok AND NOT RUN_RC EQUAL 0)
    message(FATAL_ERROR "consumer test: /dev/kvm exists but the installed vmwkvm-probe says unusable:\n${RUN_OUT}")
  endif()
  run_prog(WHAT "vmwkvm-minivmm --help" STATUS 0 CMD ${PREFIX}/bin/vmwkvm-minivmm --help)
  if(NOT RUN_OUT MATCHES "--guest")
    message(FATAL_ERROR "consumer test: vmwkvm-minivmm --help does not describe --guest:\n${RUN_OUT}")
  endif()
  # the installed demo guest, run by the installed VMM: 0 with KVM, 2 (one line why) without
  file(GLOB guest ${PREFIX}/share/vmwkvm/minivmm_demo.bin)
  if(NOT guest)
    message(FATAL_ERROR "consumer test: demo guest not installed in ${PREFIX}/share/vmwkvm")
  endif()
  if(kvm_ok)
    run_prog(WHAT "vmwkvm-minivmm --guest ${guest}" STATUS 0
             CMD ${PREFIX}/bin/vmwkvm-minivmm --guest ${guest} --guestinfo-dump ${WORK}/demo.dump)
    file(READ ${WORK}/demo.dump dump)
    if(NOT dump MATCHES "demo.hb=sent over port 0x5659 with REP OUTSB")
      message(FATAL_ERROR "consumer test: the installed demo left no guestinfo dump:\n${dump}")
    endif()
    message(STATUS "installed vmwkvm-minivmm ran its installed demo guest: exit 0")
  else()
    run_prog(WHAT "vmwkvm-minivmm --guest ${guest}" STATUS 2 CMD ${PREFIX}/bin/vmwkvm-minivmm --guest ${guest})
    message(STATUS "installed vmwkvm-minivmm: no /dev/kvm here, exit 2: ${RUN_ERR}")
  endif()
endif()

# 3. pkg-config (only our prefix is searched)
set(ENV{PKG_CONFIG_LIBDIR} ${pcdir})
set(ENV{PKG_CONFIG_PATH} "")
run(WHAT "pkg-config" CMD ${PKG_CONFIG} --define-variable=prefix=${PREFIX} --cflags --libs vmwkvm)
string(STRIP "${RUN_OUT}" pcflags)
separate_arguments(pcflags UNIX_COMMAND "${pcflags}")
if(NOT pcflags MATCHES "${PREFIX}/include")
  message(FATAL_ERROR "consumer test: pkg-config does not point into the prefix: ${pcflags}")
endif()
run(WHAT "C build (pkg-config)"
    CMD ${CC} -std=c11 -Wall -Wextra -Werror ${extra} ${SRC}/consumer.c ${pcflags} -Wl,-rpath,${libdir}
        -o ${WORK}/consumer_c_pc)
run(WHAT "C++ build (pkg-config)"
    CMD ${CXX} -std=c++17 -Wall -Wextra -Werror ${extra} ${SRC}/consumer.cpp ${pcflags} -Wl,-rpath,${libdir}
        -o ${WORK}/consumer_cxx_pc)
run(WHAT "C consumer (pkg-config)" CMD ${WORK}/consumer_c_pc)
message(STATUS "${RUN_OUT}")
run(WHAT "C++ consumer (pkg-config)" CMD ${WORK}/consumer_cxx_pc)
message(STATUS "${RUN_OUT}")

# 4. find_package(vmwkvm)
set(gen)
if(GENERATOR)
  set(gen -G ${GENERATOR})
  if(MAKE_PROGRAM)
    list(APPEND gen -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
  endif()
endif()
run(WHAT "configure (find_package)"
    CMD ${CMAKE_COMMAND} -S ${SRC}/project -B ${WORK}/fp ${gen}
        -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
        -DCONSUMER_SRC=${SRC} -DCMAKE_C_COMPILER=${CC} -DCMAKE_CXX_COMPILER=${CXX}
        "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror ${EXTRA_FLAGS}"
        "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror ${EXTRA_FLAGS}"
        "-DCMAKE_EXE_LINKER_FLAGS=${EXTRA_FLAGS}")
file(STRINGS ${WORK}/fp/CMakeCache.txt dir_line REGEX "^vmwkvm_DIR:")
if(NOT dir_line MATCHES "${PREFIX}")
  message(FATAL_ERROR "consumer test: find_package found vmwkvm outside the prefix: ${dir_line}")
endif()
run(WHAT "build (find_package)" CMD ${CMAKE_COMMAND} --build ${WORK}/fp)
run(WHAT "C consumer (find_package)" CMD ${WORK}/fp/consumer_c)
message(STATUS "${RUN_OUT}")
run(WHAT "C++ consumer (find_package)" CMD ${WORK}/fp/consumer_cxx)
message(STATUS "${RUN_OUT}")
message(STATUS "consumer test passed: pkg-config and find_package, C and C++")
