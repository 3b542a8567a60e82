#include "CShims.h"

MPI_Comm shim_mpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Errhandler shim_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }

MPI_Datatype shim_mpi_byte(void) { return MPI_BYTE; }
MPI_Datatype shim_mpi_float(void) { return MPI_FLOAT; }

MPI_Op shim_mpi_sum(void) { return MPI_SUM; }

void *shim_mpi_in_place(void) { return MPI_IN_PLACE; }
MPI_Request shim_mpi_request_null(void) { return MPI_REQUEST_NULL; }
