// The gated activation kernels compiled for AVX-512 (F/BW/VL/DQ, GCC on x86-64), chosen at run
// time by gated_act.cpp when the CPU has them; see gated_act_avx2.cpp for the mechanism.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SUBNET_NO_AVX512)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
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
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define SUBNET_CAP avx512
#include "gated_act_kernel.h"
#endif
