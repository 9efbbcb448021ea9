/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* The BPF target has no <asm/...> of its own: point the UAPI headers at the
 * architecture-neutral asm-generic ones, so the object is the same whichever
 * host (amd64, arm64) runs clang. */
#include <asm-generic/int-ll64.h>
