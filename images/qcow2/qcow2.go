// Package qcow2 converts a raw disk image into a qcow2 (version 3) image in Go: 64 KiB
// clusters, 16-bit refcounts, only clusters holding non-zero bytes allocated, metadata
// laid out in a fixed order so the same raw image always gives the same bytes.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

const (
	clusterBits   = 16
	clusterSize   = 1 << clusterBits
	l2Entries     = clusterSize / 8
	refcountOrder = 4 // 16-bit refcounts
	refsPerBlock  = clusterSize * 8 / (1 << refcountOrder)
	copiedFlag    = uint64(1) << 63
	headerLength  = 104
	magic         = 0x514649fb // "QFI\xfb"
)

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Header is the part of a qcow2 header tests and inspect look at.
type Header struct {
	Magic          uint32
	Version        uint32
	BackingOffset  uint64
	BackingSize    uint32
	ClusterBits    uint32
	Size           uint64
	CryptMethod    uint32
	L1Size         uint32
	L1Offset       uint64
	RefcountOffset uint64
	RefcountCls    uint32
	NbSnapshots    uint32
	SnapshotsOff   uint64
	Incompatible   uint64
	Compatible     uint64
	Autoclear      uint64
	RefcountOrder  uint32
	HeaderLength   uint32
}

// ReadHeader reads the header of a qcow2 image.
func ReadHeader(r io.Reader) (Header, error) {
	var h Header
	if err := binary.Read(r, binary.BigEndian, &h); err != nil {
		return h, fmt.Errorf("qcow2 header: %w", err)
	}
	if h.Magic != magic {
		return h, fmt.Errorf("not a qcow2 image")
	}
	return h, nil
}

// Convert writes the raw image at rawPath to w as qcow2.
func Convert(w io.Writer, rawPath string) error {
	f, err := os.Open(rawPath)
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	size := st.Size()
	nClusters := ceilDiv(size, clusterSize)

	// Pass 1: which guest clusters hold data.
	buf := make([]byte, clusterSize)
	var used []int64
	for c := int64(0); c < nClusters; c++ {
		clear(buf)
		if _, err := f.ReadAt(buf, c*clusterSize); err != nil && err != io.EOF {
			return fmt.Errorf("qcow2: read raw: %w", err)
		}
		if !isZero(buf) {
			used = append(used, c)
		}
	}
	l1Size := ceilDiv(nClusters, l2Entries)
	l2Needed := map[int64]bool{}
	for _, c := range used {
		l2Needed[c/l2Entries] = true
	}
	nL2 := int64(len(l2Needed))
	l1Clusters := ceilDiv(l1Size*8, clusterSize)

	// Metadata: header, L1, refcount table, refcount blocks, L2 tables; then data.
	var rtClusters, rbClusters int64 = 1, 1
	for {
		total := 1 + l1Clusters + rtClusters + rbClusters + nL2 + int64(len(used))
		rb := ceilDiv(total, refsPerBlock)
		rt := ceilDiv(rb*8, clusterSize)
		if rb == rbClusters && rt == rtClusters {
			break
		}
		rbClusters, rtClusters = rb, rt
	}
	l1Off := int64(clusterSize)
	rtOff := l1Off + l1Clusters*clusterSize
	rbOff := rtOff + rtClusters*clusterSize
	l2Off := rbOff + rbClusters*clusterSize
	dataOff := l2Off + nL2*clusterSize
	total := dataOff/clusterSize + int64(len(used))

	hdr := Header{
		Magic: magic, Version: 3, ClusterBits: clusterBits, Size: uint64(size),
		L1Size: uint32(l1Size), L1Offset: uint64(l1Off), RefcountOffset: uint64(rtOff),
		RefcountCls: uint32(rtClusters), RefcountOrder: refcountOrder, HeaderLength: headerLength,
	}
	var meta bytes.Buffer
	if err := binary.Write(&meta, binary.BigEndian, hdr); err != nil {
		return err
	}
	meta.Write(make([]byte, 8)) // end of header extensions
	meta.Write(make([]byte, clusterSize-meta.Len()))

	// L2 tables in L1 order; data clusters in guest order.
	l1 := make([]byte, l1Clusters*clusterSize)
	l2 := make([]byte, nL2*clusterSize)
	l2Index := map[int64]int64{}
	for i := int64(0); i < l1Size; i++ {
		if l2Needed[i] {
			idx := int64(len(l2Index))
			l2Index[i] = idx
			binary.BigEndian.PutUint64(l1[i*8:], uint64(l2Off+idx*clusterSize)|copiedFlag)
		}
	}
	for n, c := range used {
		table := l2Index[c/l2Entries]
		entry := table*clusterSize + (c%l2Entries)*8
		binary.BigEndian.PutUint64(l2[entry:], uint64(dataOff+int64(n)*clusterSize)|copiedFlag)
	}
	rt := make([]byte, rtClusters*clusterSize)
	for i := int64(0); i < rbClusters; i++ {
		binary.BigEndian.PutUint64(rt[i*8:], uint64(rbOff+i*clusterSize))
	}
	rb := make([]byte, rbClusters*clusterSize)
	for c := int64(0); c < total; c++ {
		binary.BigEndian.PutUint16(rb[c*2:], 1)
	}
	for _, part := range [][]byte{meta.Bytes(), l1, rt, rb, l2} {
		if _, err := w.Write(part); err != nil {
			return fmt.Errorf("qcow2: %w", err)
		}
	}
	// Pass 2: copy the data clusters (the last one padded to a full cluster).
	for _, c := range used {
		clear(buf)
		if _, err := f.ReadAt(buf, c*clusterSize); err != nil && err != io.EOF {
			return fmt.Errorf("qcow2: read raw: %w", err)
		}
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("qcow2: %w", err)
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
