/* Board glue for vectors_check.elf on mps2-an385: start-up, text on UART0, and the exit
 * status through ARM semihosting (QEMU: -semihosting-config enable=on,target=native). */
#include <stdint.h>

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0 0x40004000u

int main(void);
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

void board_init(void) {
    REG(UART0 + 0x10) = 25000000u / 115200u;
    REG(UART0 + 0x08) = 1u;
}

void board_puts(const char *s) {
    for (; *s; s++) {
        while (REG(UART0 + 0x04) & 1u) {
        }
        REG(UART0) = (uint8_t)*s;
    }
}

void board_exit(int status) {
    /* SYS_EXIT (0x18) with ADP_Stopped_ApplicationExit, or RunTimeErrorUnknown */
    register uint32_t r0 __asm("r0") = 0x18;
    register uint32_t r1 __asm("r1") = status == 0 ? 0x20026u : 0x20023u;
    __asm volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {
    }
}

static void Fault_Handler(void) { board_exit(2); }

__attribute__((section(".vectors"), used)) static void (*const g_vectors[])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler,
};
