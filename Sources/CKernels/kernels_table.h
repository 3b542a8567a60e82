// Appended to kernels_body.h in each kernels_<isa>.c: the table of this instruction set.
const bd_kernel_table BD_TABLE = {
    BD_NAME(dropout), BD_NAME(dropout_rows), BD_NAME(erf), BD_NAME(exp), BD_NAME(gelu_forward), BD_NAME(multiply),
    BD_NAME(residual_layernorm_forward), BD_NAME(embedding_layernorm_forward),
    BD_NAME(layernorm_backward_rows), BD_NAME(layernorm_backward_parameters),
    BD_NAME(add_column_sums), BD_NAME(embedding_backward),
    BD_NAME(attention_scratch_floats), BD_NAME(attention_forward), BD_NAME(attention_backward),
    BD_NAME(adam), BD_NAME(sum_of_squares),
};
