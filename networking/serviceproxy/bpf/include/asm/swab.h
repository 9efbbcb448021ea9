/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Architecture-neutral byte swapping for <linux/swab.h> on the BPF target. */
#include <asm-generic/swab.h>
