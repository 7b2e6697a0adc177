/* The reference firmware as a host program: the serial line is stdin/stdout, so it runs on
 * a pty or a socat pipe.  Run: ./mcu DEVICE_ID [reading_interval_ms] */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "mcu.h"

static uint64_t g_t0_us;

static uint64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
uint32_t plat_ms(void) { return (uint32_t)((mono_us() - g_t0_us) / 1000u); }
uint32_t plat_us(void) { return (uint32_t)(mono_us() - g_t0_us); }
uint32_t plat_random(void) { return ((uint32_t)rand() << 16) ^ (uint32_t)rand(); }

void plat_write(const uint8_t *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, buf, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            exit(0); /* line gone */
        }
        buf += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    g_t0_us = mono_us();
    mcu_init(argc > 1 ? argv[1] : NULL, argc > 2 ? (uint32_t)atoi(argv[2]) : 200);
    for (;;) {
        mcu_poll();
        uint32_t wait_ms = mcu_wake_in_ms();
        struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)((wait_ms % 1000) * 1000)};
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(STDIN_FILENO, &rd);
        int r = select(STDIN_FILENO + 1, &rd, NULL, NULL, &tv);
        if (r < 0 && errno != EINTR) return 1;
        if (r > 0) {
            uint8_t buf[256];
            ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
            if (got <= 0) {
                if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                return 0; /* line closed */
            }
            mcu_rx(buf, (size_t)got);
        }
    }
}
