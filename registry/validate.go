package registry

import (
	"bytes"
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
	"google.golang.org/protobuf/proto"
)

// Limits on requests. They keep one raft entry, one bbolt transaction and one
// response to a size every member handles in bounded time and memory.
const (
	// MaxKeySize is the largest key, in bytes.
	MaxKeySize = 4096
	// MaxValueSize is the largest value, in bytes (1 MiB).
	MaxValueSize = 1 << 20
	// MaxRequestSize is the largest marshalled request, in bytes (2 MiB): a txn
	// may not carry many maximal values at once.
	MaxRequestSize = 2 << 20
	// MaxTxnOps is the most compares plus ops, over both branches, of a txn.
	MaxTxnOps = 128
	// MaxRangeLimit is the most keys one Get returns, and the limit a Get with
	// limit 0 gets.
	MaxRangeLimit = 10000
)

// ValidatePut checks a put request without touching the store. The gRPC
// handler calls it before proposing; ApplyPut calls it again.
func ValidatePut(req *catalogpb.PutRequest) error {
	if err := validatePutFields(req); err != nil {
		return err
	}
	return validateSize(req)
}

// ValidateDelete checks a delete request without touching the store.
func ValidateDelete(req *catalogpb.DeleteRequest) error {
	if err := validateDeleteFields(req); err != nil {
		return err
	}
	return validateSize(req)
}

// ValidateGet checks a get request, its continue token included, without
// touching the store.
func ValidateGet(req *catalogpb.GetRequest) error {
	if err := validateGetFields(req); err != nil {
		return err
	}
	return validateSize(req)
}

// ValidateTxn checks a txn request without touching the store: the number of
// compares and ops, every compare, every op of both branches (whichever runs),
// and that no branch writes a key twice. Within one branch a key may be written
// once: two puts of a key, a put and a delete that covers it (the same key, or
// a prefix delete the key falls under), or two single-key deletes of a key are
// refused with ErrDuplicateKey. Deletes whose ranges overlap otherwise are
// allowed, as in etcd: the later one finds those keys gone.
func ValidateTxn(req *catalogpb.TxnRequest) error {
	if req == nil {
		return fmt.Errorf("%w: txn request is missing", ErrInvalidArgument)
	}
	if n := len(req.Compare) + len(req.Success) + len(req.Failure); n > MaxTxnOps {
		return fmt.Errorf("%w: a txn may hold at most %d compares and ops in all, got %d (%d compares, %d success ops, %d failure ops)",
			ErrTooManyOps, MaxTxnOps, n, len(req.Compare), len(req.Success), len(req.Failure))
	}
	for i, c := range req.Compare {
		if err := validateCompare(c); err != nil {
			return fmt.Errorf("txn compare %d: %w", i, err)
		}
	}
	if err := validateBranch("success", req.Success); err != nil {
		return err
	}
	if err := validateBranch("failure", req.Failure); err != nil {
		return err
	}
	return validateSize(req)
}

func validateSize(req proto.Message) error {
	if n := proto.Size(req); n > MaxRequestSize {
		return fmt.Errorf("%w: a request may be at most %d bytes marshalled, got %d", ErrRequestTooLarge, MaxRequestSize, n)
	}
	return nil
}

func validateKey(key []byte) error {
	switch n := len(key); {
	case n == 0:
		return fmt.Errorf("%w: key must be 1..%d bytes, got 0", ErrKeyEmpty, MaxKeySize)
	case n > MaxKeySize:
		return fmt.Errorf("%w: key must be 1..%d bytes, got %d", ErrKeyTooLarge, MaxKeySize, n)
	}
	return nil
}

// validateRangeKey checks the key of a get or delete: with prefix it may be
// empty, which means every key.
func validateRangeKey(key []byte, prefix bool) error {
	if prefix && len(key) == 0 {
		return nil
	}
	return validateKey(key)
}

func validateValue(value []byte) error {
	if n := len(value); n > MaxValueSize {
		return fmt.Errorf("%w: value must be at most %d bytes, got %d", ErrValueTooLarge, MaxValueSize, n)
	}
	return nil
}

func validatePutFields(req *catalogpb.PutRequest) error {
	if req == nil {
		return fmt.Errorf("%w: put request is missing", ErrInvalidArgument)
	}
	if err := validateKey(req.Key); err != nil {
		return err
	}
	if err := validateValue(req.Value); err != nil {
		return err
	}
	if req.Lease < 0 {
		return fmt.Errorf("%w: lease must be 0 (none) or a positive lease id, got %d", ErrInvalidArgument, req.Lease)
	}
	return nil
}

func validateDeleteFields(req *catalogpb.DeleteRequest) error {
	if req == nil {
		return fmt.Errorf("%w: delete request is missing", ErrInvalidArgument)
	}
	return validateRangeKey(req.Key, req.Prefix)
}

func validateGetFields(req *catalogpb.GetRequest) error {
	if req == nil {
		return fmt.Errorf("%w: get request is missing", ErrInvalidArgument)
	}
	if err := validateRangeKey(req.Key, req.Prefix); err != nil {
		return err
	}
	if req.Limit < 0 || req.Limit > MaxRangeLimit {
		return fmt.Errorf("%w: limit must be 0..%d (0 means %d), got %d", ErrInvalidLimit, MaxRangeLimit, MaxRangeLimit, req.Limit)
	}
	if len(req.ContinueToken) > 0 {
		if _, err := decodeContinueToken(req.ContinueToken, req.Key, req.Prefix); err != nil {
			return err
		}
	}
	return nil
}

func validateCompare(c *catalogpb.Compare) error {
	if c == nil {
		return fmt.Errorf("%w: compare is missing", ErrInvalidArgument)
	}
	if err := validateKey(c.Key); err != nil {
		return err
	}
	switch c.Result {
	case catalogpb.Compare_EQUAL, catalogpb.Compare_GREATER, catalogpb.Compare_LESS, catalogpb.Compare_NOT_EQUAL:
	default:
		return fmt.Errorf("%w: compare result %d is unknown; use EQUAL, GREATER, LESS or NOT_EQUAL", ErrInvalidArgument, int32(c.Result))
	}
	// An unset target_union compares with the target's zero value, as in etcd;
	// a union of another target is a client bug worth refusing.
	var ok bool
	switch c.Target {
	case catalogpb.Compare_VALUE:
		var v *catalogpb.Compare_Value
		v, ok = c.TargetUnion.(*catalogpb.Compare_Value)
		if ok {
			if err := validateValue(v.Value); err != nil {
				return err
			}
		}
	case catalogpb.Compare_MOD:
		_, ok = c.TargetUnion.(*catalogpb.Compare_ModRevision)
	case catalogpb.Compare_CREATE:
		_, ok = c.TargetUnion.(*catalogpb.Compare_CreateRevision)
	case catalogpb.Compare_VERSION:
		_, ok = c.TargetUnion.(*catalogpb.Compare_Version)
	case catalogpb.Compare_EXISTS:
		_, ok = c.TargetUnion.(*catalogpb.Compare_Exists)
		if c.Result != catalogpb.Compare_EQUAL && c.Result != catalogpb.Compare_NOT_EQUAL {
			return fmt.Errorf("%w: compare target EXISTS takes result EQUAL or NOT_EQUAL, got %s", ErrInvalidArgument, c.Result)
		}
	case catalogpb.Compare_FENCE:
		_, ok = c.TargetUnion.(*catalogpb.Compare_FenceToken)
		if c.Result != catalogpb.Compare_EQUAL && c.Result != catalogpb.Compare_NOT_EQUAL {
			return fmt.Errorf("%w: compare target FENCE takes result EQUAL (the token holds the lock named by key) or NOT_EQUAL, got %s; tokens are not ordered against a lock",
				ErrInvalidArgument, c.Result)
		}
	default:
		return fmt.Errorf("%w: compare target %d is unknown; use VALUE, MOD, CREATE, VERSION, EXISTS or FENCE", ErrInvalidArgument, int32(c.Target))
	}
	if !ok && c.TargetUnion != nil {
		return fmt.Errorf("%w: compare target %s does not match the field set (%s); set the field of the target",
			ErrInvalidArgument, c.Target, unionName(c.TargetUnion))
	}
	return nil
}

func unionName(u any) string {
	switch u.(type) {
	case *catalogpb.Compare_Value:
		return "value"
	case *catalogpb.Compare_ModRevision:
		return "mod_revision"
	case *catalogpb.Compare_CreateRevision:
		return "create_revision"
	case *catalogpb.Compare_Version:
		return "version"
	case *catalogpb.Compare_Exists:
		return "exists"
	case *catalogpb.Compare_FenceToken:
		return "fence_token"
	}
	return fmt.Sprintf("%T", u)
}

func validateBranch(branch string, ops []*catalogpb.TxnOp) error {
	for i, op := range ops {
		var err error
		switch x := op.GetOp().(type) {
		case *catalogpb.TxnOp_Put:
			err = validatePutFields(x.Put)
		case *catalogpb.TxnOp_Delete:
			err = validateDeleteFields(x.Delete)
		case *catalogpb.TxnOp_Get:
			err = validateGetFields(x.Get)
		default:
			err = fmt.Errorf("%w: op holds no put, delete or get", ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("txn %s op %d: %w", branch, i, err)
		}
	}
	return checkBranchKeys(branch, ops)
}

// A write is the key range one put or delete op writes.
type write struct {
	key    []byte
	prefix bool // a prefix delete: every key starting with key
	put    bool
}

func opWrite(op *catalogpb.TxnOp) (write, bool) {
	switch x := op.GetOp().(type) {
	case *catalogpb.TxnOp_Put:
		return write{key: x.Put.Key, put: true}, true
	case *catalogpb.TxnOp_Delete:
		return write{key: x.Delete.Key, prefix: x.Delete.Prefix}, true
	}
	return write{}, false
}

// covers reports whether d, a delete, deletes key.
func (d write) covers(key []byte) bool {
	if d.prefix {
		return bytes.HasPrefix(key, d.key)
	}
	return bytes.Equal(key, d.key)
}

// checkBranchKeys refuses a branch that writes a key twice (see ValidateTxn).
// Branches hold at most MaxTxnOps ops, so comparing pairs costs less than
// building a set, and allocates nothing.
func checkBranchKeys(branch string, ops []*catalogpb.TxnOp) error {
	for j := range ops {
		b, ok := opWrite(ops[j])
		if !ok {
			continue
		}
		for i := range j {
			a, ok := opWrite(ops[i])
			if !ok {
				continue
			}
			var clash bool
			switch {
			case a.put && b.put:
				clash = bytes.Equal(a.key, b.key)
			case a.put:
				clash = b.covers(a.key)
			case b.put:
				clash = a.covers(b.key)
			default:
				clash = !a.prefix && !b.prefix && bytes.Equal(a.key, b.key)
			}
			if clash {
				return fmt.Errorf("%w: txn %s ops %d (%s) and %d (%s) both write key %s; write each key at most once per branch",
					ErrDuplicateKey, branch, i, a.describe(), j, b.describe(), quoteKey(clashKey(a, b)))
			}
		}
	}
	return nil
}

func (w write) describe() string {
	switch {
	case w.put:
		return "put"
	case w.prefix:
		return "prefix delete"
	}
	return "delete"
}

// clashKey names the key two clashing writes share: the put's key when one is
// a put (a prefix delete's key may be only a prefix of it).
func clashKey(a, b write) []byte {
	if b.put {
		return b.key
	}
	return a.key
}
