// How much compute the gradient sum's bytes take from the core they share (issue 21), isolated
// from the trainer: two ranks each send MEGABYTES to the other while the main thread multiplies
// matrices in CHUNKS fixed pieces (about one encoder layer's backward each). The time of those
// pieces against the same pieces with nothing in flight is what the transfer took from the
// compute core. TRANSPORT:
//   none       nothing in flight (the reference)
//   mpi        MEGABYTES messages of 1 MB, MPI_Testall after each piece and a thread calling
//              MPI_Iprobe every 2 ms: what bert-dist's GradientSynchronizer and MPIProgressThread
//              do (run it with bert-dist's eager limit, see transport_cpu.sh)
//   mpi-quiet  the same without the probe thread (for Open MPI's own btl_tcp_progress_thread)
//   socket     one TCP connection of its own, a thread blocked in send() and one in recv()
//              straight into the destination: no MPI and no user-space copy on the path
//   zerocopy   the same with MSG_ZEROCOPY sends (the buffer is never changed, so the completions
//              are only drained)
// Prints one line per repetition from rank 0: the pieces' seconds and the whole exchange's.
//
//   mpicc -O2 -o transport_cpu benchmarks/transport_cpu.c -lpthread -lopenblas
//   mpirun -n 2 ... transport_cpu TRANSPORT MEGABYTES CHUNKS [REPETITIONS]
//
// benchmarks/transport_cpu.sh runs it on the namespace cluster (results in communication.md).
#define _GNU_SOURCE
#include <cblas.h>
#include <errno.h>
#include <ifaddrs.h>
#include <linux/errqueue.h>
#include <mpi.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { MEGABYTE = 1 << 20, ROWS = 1024, WIDTH = 384 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void fail(const char *what) {
    perror(what);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

// One piece of compute: 6 products [ROWS x WIDTH] x [WIDTH x WIDTH], ~1.8 GFLOP.
static float *a, *b, *c;
static void compute_piece(void) {
    for (int i = 0; i < 6; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ROWS, WIDTH, WIDTH, 1, a, WIDTH, b, WIDTH, 0, c, WIDTH);
}

static volatile int probing = 0, stopping = 0;
static void *probe_loop(void *unused) {
    (void)unused;
    struct timespec pause = {0, 2000000};
    while (!stopping) {
        int found;
        if (probing) MPI_Iprobe(MPI_ANY_SOURCE, 32000, MPI_COMM_WORLD, &found, MPI_STATUS_IGNORE);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static int connection, send_flags;
static char *out, *in;
static size_t bytes;

static void drain_completions(void) {
    char control[256];
    struct msghdr message = {0};
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    while (recvmsg(connection, &message, MSG_ERRQUEUE | MSG_DONTWAIT) >= 0) message.msg_controllen = sizeof control;
}

static void *send_all(void *unused) {
    (void)unused;
    for (size_t done = 0; done < bytes;) {
        ssize_t n = send(connection, out + done, bytes - done, send_flags);
        if (n < 0 && errno == ENOBUFS && send_flags) { drain_completions(); continue; }
        if (n <= 0) fail("send");
        done += (size_t)n;
    }
    if (send_flags) drain_completions();
    return NULL;
}

static void *receive_all(void *unused) {
    (void)unused;
    for (size_t done = 0; done < bytes;) {
        ssize_t n = recv(connection, in + done, bytes - done, 0);
        if (n <= 0) fail("recv");
        done += (size_t)n;
    }
    return NULL;
}

// Rank 0 listens on its first IPv4 address that is not loopback (a cluster host has one), rank 1 connects.
static void connect_ranks(int rank) {
    struct sockaddr_in address = {0};
    struct ifaddrs *interfaces;
    if (getifaddrs(&interfaces)) fail("getifaddrs");
    for (struct ifaddrs *i = interfaces; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK)) {
            address = *(struct sockaddr_in *)i->ifa_addr;
            break;
        }
    freeifaddrs(interfaces);
    if (rank == 0) {
        int listener = socket(AF_INET, SOCK_STREAM, 0);
        socklen_t length = sizeof address;
        address.sin_port = 0;
        if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1) ||
            getsockname(listener, (struct sockaddr *)&address, &length)) fail("listen");
        MPI_Send(&address, sizeof address, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
        if ((connection = accept(listener, NULL, NULL)) < 0) fail("accept");
    } else {
        MPI_Recv(&address, sizeof address, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        connection = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(connection, (struct sockaddr *)&address, sizeof address)) fail("connect");
    }
    int on = 1;
    setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (send_flags && setsockopt(connection, SOL_SOCKET, SO_ZEROCOPY, &on, sizeof on)) fail("SO_ZEROCOPY");
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: transport_cpu none|mpi|mpi-quiet|socket|zerocopy MEGABYTES CHUNKS [REPETITIONS]\n");
        return 2;
    }
    const char *transport = argv[1];
    int megabytes = atoi(argv[2]), chunks = atoi(argv[3]), repetitions = argc > 4 ? atoi(argv[4]) : 8;
    int uses_mpi = strncmp(transport, "mpi", 3) == 0, probes = strcmp(transport, "mpi") == 0;
    int uses_socket = strcmp(transport, "socket") == 0 || strcmp(transport, "zerocopy") == 0;
    send_flags = strcmp(transport, "zerocopy") == 0 ? MSG_ZEROCOPY : 0;
    int provided, rank;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int peer = 1 - rank;
    bytes = (size_t)megabytes * MEGABYTE;
    out = malloc(bytes);
    in = malloc(bytes);
    memset(out, 1, bytes);
    memset(in, 0, bytes);
    a = calloc(ROWS * WIDTH, sizeof(float));
    b = calloc(WIDTH * WIDTH, sizeof(float));
    c = calloc(ROWS * WIDTH, sizeof(float));
    MPI_Request *requests = malloc(2 * megabytes * sizeof(MPI_Request));
    pthread_t prober;
    if (probes) pthread_create(&prober, NULL, probe_loop, NULL);
    if (uses_socket) connect_ranks(rank);
    for (int repetition = 0; repetition < repetitions; repetition++) {
        pthread_t sender, receiver;
        if (uses_mpi) {  // receives first, as GradientSynchronizer.postReceives does
            for (int k = 0; k < megabytes; k++)
                MPI_Irecv(in + (size_t)k * MEGABYTE, MEGABYTE, MPI_BYTE, peer, 7, MPI_COMM_WORLD, &requests[k]);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        double started = now();
        if (uses_mpi) {
            for (int k = 0; k < megabytes; k++)
                MPI_Isend(out + (size_t)k * MEGABYTE, MEGABYTE, MPI_BYTE, peer, 7, MPI_COMM_WORLD, &requests[megabytes + k]);
            probing = 1;
        } else if (uses_socket) {
            pthread_create(&sender, NULL, send_all, NULL);
            pthread_create(&receiver, NULL, receive_all, NULL);
        }
        for (int chunk = 0; chunk < chunks; chunk++) {
            compute_piece();
            int finished;
            if (uses_mpi) MPI_Testall(2 * megabytes, requests, &finished, MPI_STATUSES_IGNORE);
        }
        double computed = now() - started;
        if (uses_mpi) {
            probing = 0;
            MPI_Waitall(2 * megabytes, requests, MPI_STATUSES_IGNORE);
        } else if (uses_socket) {
            pthread_join(sender, NULL);
            pthread_join(receiver, NULL);
        }
        double total = now() - started;
        if (rank == 0) printf("%s %d MB repetition %d compute %.4f total %.4f\n", transport, megabytes, repetition, computed, total);
    }
    stopping = 1;
    if (probes) pthread_join(prober, NULL);
    MPI_Finalize();
    return 0;
}
