// The kernels for any CPU of the target architecture (SSE2 on x86_64).
#define BD_NAME(name) bd_baseline_##name
#define BD_TABLE bd_kernels_baseline
#include "kernels_body.h"
#include "kernels_table.h"
