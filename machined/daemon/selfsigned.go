package daemon

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the maintenance certificate (RFC 5280, RFC 5480, RFC 5758).
var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256            = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidCommonName      = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidServerAuth      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
)

// maintenanceCN is the maintenance certificate's subject and issuer common name.
const maintenanceCN = "kiln maintenance"

// selfSignedDER encodes and signs the maintenance certificate: an X.509 v3
// certificate for key's P-256 public key, issued by itself (CN "kiln maintenance"),
// valid from notBefore to notAfter, for TLS server authentication (key usage digital
// signature) under the names localhost, 127.0.0.1 and ::1, signed with ECDSA and
// SHA-256. It is what x509.CreateCertificate makes of the same template, without the
// encoding by reflection and the verification of the signature it has just made.
func selfSignedDER(key *ecdsa.PrivateKey, serial *big.Int, notBefore, notAfter time.Time) ([]byte, error) {
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	var tbs cryptobyte.Builder
	tbs.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(serial)
		addSignatureAlgorithm(b)
		addName(b, maintenanceCN) // issuer
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, notBefore)
			addTime(b, notAfter)
		})
		addName(b, maintenanceCN) // subject
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addP256Algorithm(b)
			b.AddASN1BitString(pub)
		})
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addExtension(b, oidKeyUsage, true, func(b *cryptobyte.Builder) {
					// digitalSignature, the first bit: one byte, seven bits unused.
					b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{7, 0x80}) })
				})
				addExtension(b, oidExtKeyUsage, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidServerAuth) })
				})
				addExtension(b, oidSubjectAltName, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte("localhost")) })
						b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte{127, 0, 0, 1}) })
						b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddBytes([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
						})
					})
				})
			})
		})
	})
	raw, err := tbs.Bytes()
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(raw)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	var cert cryptobyte.Builder
	cert.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(raw)
		addSignatureAlgorithm(b)
		b.AddASN1BitString(sig)
	})
	return cert.Bytes()
}

// pkcs8DER encodes a P-256 private key as PKCS #8 (RFC 5208) holding an RFC 5915
// ECPrivateKey with its public key and without the curve, which the PKCS #8
// algorithm names: the form x509.MarshalPKCS8PrivateKey writes.
func pkcs8DER(key *ecdsa.PrivateKey) ([]byte, error) {
	if key.Curve.Params().Name != "P-256" {
		return nil, errors.New("pkcs8: not a P-256 key")
	}
	d, err := key.Bytes()
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	var ec cryptobyte.Builder
	ec.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // ecPrivkeyVer1
		b.AddASN1OctetString(d)
		b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1BitString(pub)
		})
	})
	inner, err := ec.Bytes()
	if err != nil {
		return nil, err
	}
	var p8 cryptobyte.Builder
	p8.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		addP256Algorithm(b)
		b.AddASN1OctetString(inner)
	})
	return p8.Bytes()
}

// addSignatureAlgorithm adds the AlgorithmIdentifier of ECDSA with SHA-256 (no
// parameters).
func addSignatureAlgorithm(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSAWithSHA256) })
}

// addP256Algorithm adds the AlgorithmIdentifier of an elliptic curve key on the
// named curve P-256.
func addP256Algorithm(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidECPublicKey)
		b.AddASN1ObjectIdentifier(oidP256)
	})
}

// addName adds a distinguished name with one common name, as a PrintableString
// (cn must be printable, as "kiln maintenance" is).
func addName(b *cryptobyte.Builder, cn string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidCommonName)
				b.AddASN1(cbasn1.PrintableString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(cn)) })
			})
		})
	})
}

// addTime adds a validity time: UTCTime for the years 1950 to 2049, GeneralizedTime
// otherwise (RFC 5280, 4.1.2.5).
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// addExtension adds one certificate extension whose value value writes.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}
