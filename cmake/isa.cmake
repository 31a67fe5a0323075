# ISA selection.
#
# Portable build (default): every file is compiled for the baseline x86-64 ISA, except
# the GEMM micro-kernels, which are compiled once per ISA (gemm/kernel_avx2.cpp,
# gemm/kernel_avx512.cpp; qgemm/qkernel_avx2.cpp, qgemm/qkernel_vnni.cpp, qgemm/qkernel_amx.cpp
# for int8) and
# chosen at run time from what the CPU reports; elementwise
# kernels use FASTNN_CLONES (GCC/Clang target_clones) for the same effect.
#
# FASTNN_NATIVE=ON: everything is compiled with -march=native and the run-time choice
# only picks among the kernels that this machine supports.
function(fastnn_apply_isa_flags target)
  set(_x86 OFF)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64|i.86")
    set(_x86 ON)
  endif()
  if(FASTNN_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(_x86)
    target_compile_definitions(${target} PRIVATE FASTNN_X86=1)
    set_source_files_properties(
      ${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/gemm/kernel_avx2.cpp
      PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
    set_source_files_properties(
      ${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/gemm/kernel_avx512.cpp
      PROPERTIES COMPILE_OPTIONS "-mavx512f;-mavx512vl;-mavx2;-mfma")
    set_source_files_properties(
      ${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/qgemm/qkernel_avx2.cpp
      PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-ffp-contract=off")
    set_source_files_properties(
      ${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/qgemm/qkernel_vnni.cpp
      PROPERTIES COMPILE_OPTIONS
      "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx512vnni;-mavx2;-mfma;-ffp-contract=off")
    # AMX needs GCC 11 / Clang 12; with an older compiler the file builds a stub and the
    # run-time choice never offers "amx".
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag("-mamx-tile -mamx-int8" FASTNN_HAVE_AMX_FLAGS)
    if(FASTNN_HAVE_AMX_FLAGS)
      set_source_files_properties(
        ${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/qgemm/qkernel_amx.cpp
        PROPERTIES COMPILE_OPTIONS
        "-mamx-tile;-mamx-int8;-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx512vnni;-mavx2;-mfma;-ffp-contract=off")
    endif()
  endif()
  # The int8 kernels (cpp/cpu/qgemm): the per-ISA files above are chosen at run time.
  # Their float epilogue is specified operation by operation (qgemm.h), so no file of
  # theirs may fuse a multiply and an add.
  foreach(_src qgemm.cpp qkernel_generic.cpp)
    set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/cpp/cpu/qgemm/${_src}
                                PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
  endforeach()
endfunction()
