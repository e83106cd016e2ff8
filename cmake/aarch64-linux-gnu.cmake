# Cross-compiling glowrt for ARM64 Linux with Debian's gcc-aarch64-linux-gnu
# against a sysroot folder of Debian arm64 .debs (scripts/aarch64-sysroot
# builds it; never install arm64 -dev packages with apt multiarch here).
# Programs then run under qemu-user: scripts/run-aarch64, or directly once
# binfmt_misc knows qemu (scripts/aarch64-sysroot registers it) with
# QEMU_LD_PREFIX pointing at the sysroot (ctest --preset aarch64 sets it).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

if(NOT GLOWRT_SYSROOT)
  get_filename_component(GLOWRT_SYSROOT "${CMAKE_CURRENT_LIST_DIR}/../.cache/aarch64-sysroot" ABSOLUTE)
endif()
set(GLOWRT_SYSROOT "${GLOWRT_SYSROOT}" CACHE PATH "arm64 sysroot folder (scripts/aarch64-sysroot)")
if(NOT EXISTS "${GLOWRT_SYSROOT}/usr/include/aarch64-linux-gnu")
  message(FATAL_ERROR "no arm64 sysroot at ${GLOWRT_SYSROOT}: run scripts/aarch64-sysroot first")
endif()
set(CMAKE_SYSROOT "${GLOWRT_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${GLOWRT_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config must read the sysroot's .pc files and prefix their paths.
set(ENV{PKG_CONFIG_DIR} "")
set(ENV{PKG_CONFIG_LIBDIR} "${GLOWRT_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${GLOWRT_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${GLOWRT_SYSROOT}")
