# The CUDA backend (src/backend/cuda/): nvcc for the kernels (*.cu), the C compiler for the glue
# (*.c, which calls the CUDA runtime and cuBLAS through their C headers), cudart + cuBLAS +
# cuBLASLt from the toolkit. Included from CMakeLists.txt when TERN_CUDA is ON.
#
# CMAKE_CUDA_ARCHITECTURES: by default a fat binary with machine code for every architecture
# people own, Turing (sm_75) through Blackwell (sm_100, sm_120), plus PTX of the newest so that
# later cards JIT it. Give -DCMAKE_CUDA_ARCHITECTURES=90 (or native) to build for one card only:
# that is much faster to compile (CI does, see .ci/run).
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(TERN_NVCC nvcc PATHS /usr/local/cuda/bin NO_CACHE)
  if(TERN_NVCC)
    set(CMAKE_CUDA_COMPILER ${TERN_NVCC})
  endif()
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;100-real;120"
    CACHE STRING "CUDA architectures to build for (default: Turing..Blackwell, fat binary)")
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "TERN_CUDA=ON, but no CUDA compiler (nvcc) was found: install the CUDA "
    "toolkit, or give -DCMAKE_CUDA_COMPILER=/path/to/nvcc, or configure with -DTERN_CUDA=OFF")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

file(GLOB TERN_CUDA_C_SRC CONFIGURE_DEPENDS src/backend/cuda/*.c)
file(GLOB TERN_CUDA_CU_SRC CONFIGURE_DEPENDS src/backend/cuda/*.cu)
target_sources(ternlib PRIVATE ${TERN_CUDA_C_SRC} ${TERN_CUDA_CU_SRC})
target_compile_definitions(ternlib PUBLIC TERN_HAVE_CUDA=1)
# ternlib exists before the CUDA language is enabled, so it did not take the default
set_target_properties(ternlib PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
target_link_libraries(ternlib PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt)

# nvcc: warnings of the device compiler and of the host compiler it runs; as errors with
# TERN_WERROR. The elementwise and decode kernels must not fuse multiply-adds (the same rounding
# as the CPU reference, which builds with -ffp-contract=off); attention and the loss may.
set(TERN_CUDA_FLAGS -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter --expt-relaxed-constexpr)
if(TERN_WERROR)
  list(APPEND TERN_CUDA_FLAGS -Werror=all-warnings -Xcompiler=-Werror)
endif()
target_compile_options(ternlib PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:${TERN_CUDA_FLAGS}>")
set_source_files_properties(
  ${CMAKE_CURRENT_SOURCE_DIR}/src/backend/cuda/k_elem.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/backend/cuda/k_quant.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/backend/cuda/k_moe.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/backend/cuda/k_bitnet.cu
  PROPERTIES COMPILE_OPTIONS "--fmad=false")
message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
