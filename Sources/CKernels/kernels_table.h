// Appended to kernels_body.h in each kernels_<isa>.c: the table of this instruction set, one
// entry per BD_KERNELS item (include/CKernels.h).
#define BD_TABLE_ENTRY(type, name, parameters) .name = BD_NAME(name),
const bd_kernel_table BD_TABLE = { BD_KERNELS(BD_TABLE_ENTRY) };
#undef BD_TABLE_ENTRY
