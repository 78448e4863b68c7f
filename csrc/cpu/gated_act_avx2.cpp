// The gated activation kernels compiled for AVX2+FMA (GCC on x86-64), chosen at run time by
// gated_act.cpp when the CPU has them. The ATen vector types pick their AVX2 versions from
// CPU_CAPABILITY_AVX2 and live in their own inline namespace (at::vec::AVX2).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SUBNET_NO_AVX2)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
// The pragma enables the instructions but not the feature macros sleef.h and ATen test.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define SUBNET_CAP avx2
#include "gated_act_kernel.h"
#endif
