/* The reference firmware on an ARM Cortex-M3 board: QEMU's mps2-an385 (CMSDK APB UART0 at
 * 0x40004000, SysTick from the 25 MHz system clock). Bare metal, no RTOS: a vector table, a
 * reset handler that sets up .data/.bss, a 1 ms SysTick, a UART receive interrupt into a ring
 * buffer, and a main loop that sleeps in WFI between events. */
#include <stdint.h>
#include <string.h>

#include "mcu.h"

#ifndef DEVICE_ID
#define DEVICE_ID "qemu-m3-0001"
#endif
#ifndef READING_INTERVAL_MS
#define READING_INTERVAL_MS 200
#endif

#define SYSCLK_HZ 25000000u
#define REG(a) (*(volatile uint32_t *)(a))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04)
#define UART_CTRL REG(UART0 + 0x08)
#define UART_INT REG(UART0 + 0x0C)
#define UART_BAUDDIV REG(UART0 + 0x10)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)

static volatile uint32_t g_ms;
static volatile uint8_t g_rx[512];
static volatile uint32_t g_rx_head, g_rx_tail;
static uint32_t g_boots __attribute__((section(".noinit")));

void SysTick_Handler(void) { g_ms++; }

void UART0RX_Handler(void) {
    UART_INT = 2u; /* clear RX */
    while (UART_STATE & 2u) {
        uint8_t b = (uint8_t)UART_DATA;
        uint32_t next = (g_rx_head + 1u) % sizeof g_rx;
        if (next != g_rx_tail) { /* full: the byte is lost, as on a UART */
            g_rx[g_rx_head] = b;
            g_rx_head = next;
        }
    }
}

uint32_t plat_ms(void) { return g_ms; }

uint32_t plat_us(void) {
    uint32_t ms, cvr;
    do { /* a consistent (ms, counter) pair */
        ms = g_ms;
        cvr = SYST_CVR;
    } while (ms != g_ms);
    return ms * 1000u + (SYSCLK_HZ / 1000u - 1u - cvr) / (SYSCLK_HZ / 1000000u);
}

uint32_t plat_random(void) {
    /* No entropy source on this board: a boot counter kept in RAM across resets, mixed with
       timer jitter, through a multiply-xorshift (different boot ids across resets). */
    static uint32_t x;
    x += 0x9E3779B9u * (++g_boots) ^ SYST_CVR ^ (g_ms << 16);
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    return x;
}

void plat_write(const uint8_t *p, size_t n) {
    while (n--) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = *p++;
    }
}

int main(void) {
    SYST_RVR = SYSCLK_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    UART_BAUDDIV = SYSCLK_HZ / 115200u;
    UART_CTRL = 1u | 2u | 8u; /* TX, RX, RX interrupt */
    NVIC_ISER0 = 1u;          /* IRQ 0: UART0 RX */
    mcu_init(DEVICE_ID, READING_INTERVAL_MS);
    for (;;) {
        mcu_poll();
        while (g_rx_tail != g_rx_head) {
            uint8_t chunk[64];
            size_t n = 0;
            __asm volatile("cpsid i");
            while (g_rx_tail != g_rx_head && n < sizeof chunk) {
                chunk[n++] = g_rx[g_rx_tail];
                g_rx_tail = (g_rx_tail + 1u) % sizeof g_rx;
            }
            __asm volatile("cpsie i");
            mcu_rx(chunk, n);
            mcu_poll();
        }
        __asm volatile("cpsid i");
        if (g_rx_tail == g_rx_head && mcu_wake_in_ms() > 0) __asm volatile("wfi");
        __asm volatile("cpsie i");
    }
}

/* ---- start-up --------------------------------------------------------------------------- */
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {
    }
}

void Default_Handler(void) {
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const g_vectors[])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0,
    Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler,
    UART0RX_Handler, /* IRQ 0 */
};
