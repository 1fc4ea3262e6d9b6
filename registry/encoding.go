package registry

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of catalogpb.KeyValue. The stored encoding is exactly what
// proto.Marshal produces for the same message (a test checks it), so any
// protobuf reader can decode the bucket; it is written and read by hand here
// because this is the hot path and the generic codec costs extra allocations.
const (
	fieldKey            protowire.Number = 1
	fieldValue          protowire.Number = 2
	fieldCreateRevision protowire.Number = 3
	fieldModRevision    protowire.Number = 4
	fieldVersion        protowire.Number = 5
	fieldLease          protowire.Number = 6
)

// encodeKV returns the stored encoding of a key and the KeyValue it encodes.
// The KeyValue's Key and Value alias the encoding, so one allocation serves
// both, and they no longer depend on the request the caller may reuse. bbolt
// keeps a reference to the encoding until commit; nothing may modify it.
func encodeKV(key, value []byte, createRev, modRev, version, lease int64) (*catalogpb.KeyValue, []byte) {
	size := protowire.SizeTag(fieldKey) + protowire.SizeBytes(len(key))
	if len(value) > 0 {
		size += protowire.SizeTag(fieldValue) + protowire.SizeBytes(len(value))
	}
	size += sizeInt(fieldCreateRevision, createRev) + sizeInt(fieldModRevision, modRev) +
		sizeInt(fieldVersion, version) + sizeInt(fieldLease, lease)

	kv := &catalogpb.KeyValue{CreateRevision: createRev, ModRevision: modRev, Version: version, Lease: lease}
	buf := make([]byte, 0, size)
	buf = protowire.AppendTag(buf, fieldKey, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(len(key)))
	start := len(buf)
	buf = append(buf, key...)
	kv.Key = buf[start:len(buf):len(buf)]
	if len(value) > 0 {
		buf = protowire.AppendTag(buf, fieldValue, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(len(value)))
		start = len(buf)
		buf = append(buf, value...)
		kv.Value = buf[start:len(buf):len(buf)]
	}
	buf = appendInt(buf, fieldCreateRevision, createRev)
	buf = appendInt(buf, fieldModRevision, modRev)
	buf = appendInt(buf, fieldVersion, version)
	buf = appendInt(buf, fieldLease, lease)
	return kv, buf
}

// sizeInt and appendInt follow proto3: a zero int64 is not written.
func sizeInt(num protowire.Number, v int64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(uint64(v))
}

func appendInt(buf []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return buf
	}
	buf = protowire.AppendTag(buf, num, protowire.VarintType)
	return protowire.AppendVarint(buf, uint64(v))
}

// A storedKV is a stored KeyValue parsed in place: key and value alias the
// bbolt page and are valid only until the transaction ends. Compares read it
// without copying; anything that leaves the transaction goes through clone.
type storedKV struct {
	key, value                                  []byte
	createRevision, modRevision, version, lease int64
}

// parseKV parses a stored KeyValue. Unknown fields are skipped, so a newer
// binary may add fields without breaking an older reader.
func parseKV(data []byte) (storedKV, error) {
	var s storedKV
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return s, protowire.ParseError(n)
		}
		data = data[n:]
		switch {
		case (num == fieldKey || num == fieldValue) && typ == protowire.BytesType:
			var b []byte
			b, n = protowire.ConsumeBytes(data)
			if num == fieldKey {
				s.key = b
			} else {
				s.value = b
			}
		case num >= fieldCreateRevision && num <= fieldLease && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(data)
			switch num {
			case fieldCreateRevision:
				s.createRevision = int64(v)
			case fieldModRevision:
				s.modRevision = int64(v)
			case fieldVersion:
				s.version = int64(v)
			case fieldLease:
				s.lease = int64(v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return s, protowire.ParseError(n)
		}
		data = data[n:]
	}
	return s, nil
}

// corrupt reports a stored value that does not parse. It means the database
// is damaged, not that the request was bad, so it wraps no sentinel.
func corrupt(key []byte, err error) error {
	return fmt.Errorf("registry: stored value of key %s in bucket %q is corrupt: %w", quoteKey(key), KVBucket, err)
}

// clone copies s out of the transaction. Key and value share one allocation.
func (s *storedKV) clone(withValue bool) *catalogpb.KeyValue {
	kv := &catalogpb.KeyValue{
		CreateRevision: s.createRevision,
		ModRevision:    s.modRevision,
		Version:        s.version,
		Lease:          s.lease,
	}
	n := len(s.key)
	if withValue {
		n += len(s.value)
	}
	buf := make([]byte, n)
	copy(buf, s.key)
	kv.Key = buf[:len(s.key):len(s.key)]
	if withValue && len(s.value) > 0 {
		copy(buf[len(s.key):], s.value)
		kv.Value = buf[len(s.key):]
	}
	return kv
}

// A continue token is
//
//	version (1 byte) | CRC-32C of the range (4 bytes, big endian) | next key
//
// The checksum covers the range's key and prefix flag and the next key, so a
// token taken from one range is refused by another even when its next key
// falls inside both, and an altered token is refused. It guards against
// mistakes, not against a forger: tokens carry no secret because any member
// must accept any member's token.
const (
	tokenVersion   = 1
	tokenHeaderLen = 1 + 4
	maxTokenLen    = tokenHeaderLen + MaxKeySize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rangeFlags are the bytes that tell a prefix range from a single key in the
// checksum, kept in variables so computing it allocates nothing.
var rangeFlags = [2][]byte{{0}, {1}}

func tokenChecksum(rangeKey []byte, prefix bool, next []byte) uint32 {
	flag := rangeFlags[0]
	if prefix {
		flag = rangeFlags[1]
	}
	sum := crc32.Checksum(flag, castagnoli)
	// The key's length keeps ("ab", "c") and ("a", "bc") apart.
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(rangeKey)))
	sum = crc32.Update(sum, castagnoli, n[:])
	sum = crc32.Update(sum, castagnoli, rangeKey)
	return crc32.Update(sum, castagnoli, next)
}

func encodeContinueToken(rangeKey []byte, prefix bool, next []byte) []byte {
	tok := make([]byte, tokenHeaderLen, tokenHeaderLen+len(next))
	tok[0] = tokenVersion
	binary.BigEndian.PutUint32(tok[1:], tokenChecksum(rangeKey, prefix, next))
	return append(tok, next...)
}

// decodeContinueToken returns the key a token resumes from, after checking
// that the token was made for this range and that the key lies inside it.
func decodeContinueToken(tok, rangeKey []byte, prefix bool) ([]byte, error) {
	if len(tok) <= tokenHeaderLen || len(tok) > maxTokenLen || tok[0] != tokenVersion {
		return nil, fmt.Errorf("%w: token is malformed; pass next_token of the previous page unchanged", ErrInvalidContinueToken)
	}
	next := tok[tokenHeaderLen:]
	if binary.BigEndian.Uint32(tok[1:]) != tokenChecksum(rangeKey, prefix, next) {
		return nil, fmt.Errorf("%w: token was altered or belongs to another range; pass it unchanged with the same key and prefix as the request that returned it", ErrInvalidContinueToken)
	}
	if prefix && !bytes.HasPrefix(next, rangeKey) || !prefix && !bytes.Equal(next, rangeKey) {
		return nil, fmt.Errorf("%w: token resumes at key %s, outside the requested range", ErrInvalidContinueToken, quoteKey(next))
	}
	return next, nil
}
