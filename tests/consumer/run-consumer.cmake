# Install the build into a temporary prefix and build/run consumers against it.
# cmake -DBUILD_DIR= -DSRC= -DWORK= -DCC= -DCXX= -DPKG_CONFIG= -DGENERATOR= -DMAKE_PROGRAM= -DEXTRA_FLAGS= -P run-consumer.cmake

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
