package disk

import (
	"crypto/sha256"
	"fmt"
)

// GUID derives a stable RFC 4122 (version 4 layout, variant 1) GUID from seed and name.
func GUID(seed, name string) string {
	h := sha256.Sum256([]byte("kiln-guid\x00" + seed + "\x00" + name))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
