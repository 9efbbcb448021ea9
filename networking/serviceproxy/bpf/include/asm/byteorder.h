/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The objects are built for the little-endian BPF target only (bpfel), so the
 * UAPI headers that need <asm/byteorder.h> (linux/ip.h, linux/tcp.h) get the
 * little-endian definitions whichever host runs clang. */
#include <linux/byteorder/little_endian.h>
