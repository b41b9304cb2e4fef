# Tiny guests written in GNU assembler, assembled at build time into flat binaries.
#   vmwkvm_add_guest(NAME <name> SOURCE <file.S> LOAD <address>)
# produces ${PROJECT_BINARY_DIR}/guests/<name>.bin linked to run at <address>, and a
# target guest_<name>. The source is preprocessed by the C compiler (so #define works)
# and assembled as 32-bit code; use .code16 for real-mode parts.
set(VMWKVM_GUEST_DIR ${PROJECT_BINARY_DIR}/guests)
file(MAKE_DIRECTORY ${VMWKVM_GUEST_DIR})
find_program(VMWKVM_LD NAMES ld ld.bfd REQUIRED)
find_program(VMWKVM_OBJCOPY NAMES objcopy REQUIRED)
# Guests are one flat RWX image by design; silence binutils >= 2.39's warning about it.
execute_process(COMMAND ${VMWKVM_LD} --help OUTPUT_VARIABLE _vmwkvm_ld_help ERROR_QUIET)
set(VMWKVM_GUEST_LDFLAGS "")
if(_vmwkvm_ld_help MATCHES "no-warn-rwx-segments")
  set(VMWKVM_GUEST_LDFLAGS --no-warn-rwx-segments)
endif()

function(vmwkvm_add_guest)
  cmake_parse_arguments(G "" "NAME;SOURCE;LOAD" "DEPENDS" ${ARGN})
  get_filename_component(src ${G_SOURCE} ABSOLUTE)
  set(obj ${VMWKVM_GUEST_DIR}/${G_NAME}.o)
  set(elf ${VMWKVM_GUEST_DIR}/${G_NAME}.elf)
  set(bin ${VMWKVM_GUEST_DIR}/${G_NAME}.bin)
  add_custom_command(OUTPUT ${bin}
    COMMAND ${CMAKE_C_COMPILER} -m32 -c -x assembler-with-cpp -nostdinc
            -I${PROJECT_SOURCE_DIR}/tests/common/guests -o ${obj} ${src}
    COMMAND ${VMWKVM_LD} -m elf_i386 ${VMWKVM_GUEST_LDFLAGS} -nostdlib -static -N -e 0 -Ttext=${G_LOAD} -o ${elf} ${obj}
    COMMAND ${VMWKVM_OBJCOPY} -O binary ${elf} ${bin}
    DEPENDS ${src} ${G_DEPENDS}
    IMPLICIT_DEPENDS C ${src}
    COMMENT "Assembling guest ${G_NAME}"
    VERBATIM)
  add_custom_target(guest_${G_NAME} ALL DEPENDS ${bin})
endfunction()
