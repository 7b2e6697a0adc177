/* The FarmIQ reference MCU firmware, independent of the board: the whole protocol v1
 * (docs/mcu-protocol.md). A board supplies the four plat_* functions and a main loop that
 * feeds received bytes to mcu_rx() and calls mcu_poll() at least every mcu_wake_in_ms(). */
#ifndef FARMIQ_MCU_H
#define FARMIQ_MCU_H
#include <stddef.h>
#include <stdint.h>

/* The budget this firmware declares in HELLO and keeps to (checked by the linker script on
 * the Cortex-M build): two model slots in flash, a tensor arena in RAM. */
enum { MODEL_SLOT_BYTES = 32 * 1024, ARENA_BYTES = 16 * 1024, MODEL_SLOTS = 2 };
#define FW_VERSION "c-ref-2.0"

uint32_t plat_ms(void);    /* milliseconds since boot */
uint32_t plat_us(void);    /* free-running microseconds (wraps) */
uint32_t plat_random(void);
void plat_write(const uint8_t *p, size_t n);

void mcu_init(const char *device_id, uint32_t reading_interval_ms);
void mcu_rx(const uint8_t *p, size_t n);
void mcu_poll(void);
uint32_t mcu_wake_in_ms(void);
#endif
