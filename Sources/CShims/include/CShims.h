#ifndef CSHIMS_H
#define CSHIMS_H
// Why this file exists: Open MPI defines its predefined handles (MPI_COMM_WORLD, MPI_FLOAT,
// MPI_SUM, MPI_ERRORS_RETURN, MPI_REQUEST_NULL, ...) as casts of the addresses of global structs,
// and MPI_IN_PLACE as `(void *) 1`. Swift's C importer only imports macros that expand to plain
// literals, so none of these reach Swift. Each one is returned by a one-line C function instead;
// Swift calls the function at the point of use and never stores a handle in a global.
#include <mpi.h>

// Communicators and error handlers.
MPI_Comm shim_mpi_comm_world(void);
MPI_Errhandler shim_mpi_errors_return(void);

// Datatypes.
MPI_Datatype shim_mpi_byte(void);
MPI_Datatype shim_mpi_float(void);

// Reduction operations (the baseline MPI_Allreduce of bench-comm).
MPI_Op shim_mpi_sum(void);

// Sentinels.
void *shim_mpi_in_place(void);
MPI_Request shim_mpi_request_null(void);

#endif
