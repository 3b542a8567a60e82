// Why the bucketed gradient sum moved at half the link rate (issue 13), isolated from the trainer:
// two MPI ranks exchange MEGABYTES in each direction as PIECES non-blocking messages, while the
// main thread "computes" (sleeps) between MPI_Testall calls every MAIN_MS milliseconds (0: one
// MPI_Waitall), optionally with a thread that calls MPI_Iprobe every PROBE_US microseconds (what
// bert-dist's MPIProgressThread does; 0: none). Prints each repetition's time (slowest rank).
//
//   mpicc -O2 -o tcp_messages benchmarks/tcp_messages.c -lpthread
//   mpirun -n 2 ... tcp_messages MEGABYTES PIECES MAIN_MS PROBE_US [one|both] [REPETITIONS]
//
// benchmarks/tcp_messages.sh runs the table of benchmarks/communication.md on the namespace cluster.
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void sleep_seconds(double seconds) {
    struct timespec pause = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&pause, NULL);
}

static volatile int probing = 1;
static double probe_seconds;

static void *probe_loop(void *unused) {
    (void)unused;
    while (probing) {
        int found;
        MPI_Iprobe(MPI_ANY_SOURCE, 32000, MPI_COMM_WORLD, &found, MPI_STATUS_IGNORE);
        sleep_seconds(probe_seconds);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: tcp_messages MEGABYTES PIECES MAIN_MS PROBE_US [one|both] [REPETITIONS]\n");
        return 2;
    }
    long floats = atol(argv[1]) * 1000000L / 4;
    int pieces = atoi(argv[2]);
    double main_seconds = atof(argv[3]) / 1000, probe_us = atof(argv[4]);
    int both = argc < 6 || strcmp(argv[5], "one") != 0;
    int repetitions = argc > 6 ? atoi(argv[6]) : 5;
    probe_seconds = probe_us / 1e6;
    int provided, rank;
    MPI_Init_thread(&argc, &argv, probe_us > 0 ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int peer = 1 - rank;
    float *out = malloc(floats * sizeof(float)), *in = malloc(floats * sizeof(float));
    memset(out, 1, floats * sizeof(float));
    memset(in, 0, floats * sizeof(float));
    MPI_Request *requests = malloc(2 * pieces * sizeof(MPI_Request));
    pthread_t prober;
    if (probe_us > 0) pthread_create(&prober, NULL, probe_loop, NULL);
    for (int repetition = 0; repetition <= repetitions; repetition++) {  // repetition 0 connects: not printed
        MPI_Barrier(MPI_COMM_WORLD);
        double start = now();
        int count = 0;
        long per = floats / pieces;
        for (int p = 0; p < pieces; p++) {
            if (both || rank == 1) MPI_Irecv(in + p * per, per, MPI_FLOAT, peer, p, MPI_COMM_WORLD, &requests[count++]);
            if (both || rank == 0) MPI_Isend(out + p * per, per, MPI_FLOAT, peer, p, MPI_COMM_WORLD, &requests[count++]);
        }
        if (main_seconds == 0) {
            MPI_Waitall(count, requests, MPI_STATUSES_IGNORE);
        } else {
            int done = 0;
            while (!done) {
                MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE);
                if (!done) sleep_seconds(main_seconds);
            }
        }
        double seconds = now() - start, slowest;
        MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (rank == 0 && repetition > 0) {
            char main_text[64], probe_text[64];
            snprintf(main_text, sizeof main_text, main_seconds == 0 ? "in MPI_Waitall" : "MPI_Testall every %s ms", argv[3]);
            snprintf(probe_text, sizeof probe_text, probe_us > 0 ? "MPI_Iprobe every %s us" : "none", argv[4]);
            printf("%s, %d x %.2f MB, main thread %s, probe thread %s: %.3f s, %.0f MB/s each way\n",
                   both ? "both directions" : "one direction", pieces, per * 4 / 1e6, main_text, probe_text,
                   slowest, floats * 4 / slowest / 1e6);
        }
    }
    probing = 0;
    if (probe_us > 0) pthread_join(prober, NULL);
    MPI_Finalize();
    return 0;
}
