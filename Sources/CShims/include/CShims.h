#ifndef CSHIMS_H
#define CSHIMS_H
// Why this exists: OpenMPI defines MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, ...
// as casts of addresses of global structs; Swift's importer cannot import such macros.
#include <mpi.h>
MPI_Comm shim_mpi_comm_world(void);
#endif
