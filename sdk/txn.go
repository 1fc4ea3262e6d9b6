package sdk

import (
	"context"
	"errors"
	"fmt"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A Cmp is one condition of a transaction, made by Compare from a target
// (Value, ModRevision, CreateRevision, Version or Exists).
type Cmp struct {
	pb  *catalogpb.Compare
	err error
}

func target(key string, t catalogpb.Compare_Target) Cmp {
	return Cmp{pb: &catalogpb.Compare{Key: []byte(key), Target: t}}
}

// Value targets the value of key; compare it with a string.
func Value(key string) Cmp { return target(key, catalogpb.Compare_VALUE) }

// ModRevision targets the revision of key's last write; compare it with an integer.
func ModRevision(key string) Cmp { return target(key, catalogpb.Compare_MOD) }

// CreateRevision targets the revision key was created at; compare it with an integer.
func CreateRevision(key string) Cmp { return target(key, catalogpb.Compare_CREATE) }

// Version targets the number of writes to key since its creation; compare it
// with an integer (0 for a key that does not exist).
func Version(key string) Cmp { return target(key, catalogpb.Compare_VERSION) }

// Exists targets whether key exists; compare it with a bool using "=" or "!=".
// Fence (coordination.go) targets whether a lock's fencing token is held.
func Exists(key string) Cmp { return target(key, catalogpb.Compare_EXISTS) }

// Compare makes a condition: the target, an operator ("=", "!=", ">" or "<")
// and the value to compare with (string or []byte for Value; int or int64 for
// the revisions and Version; bool for Exists and Fence). A mismatch is reported by
// Commit, not by a panic.
func Compare(c Cmp, op string, v any) Cmp {
	if c.err != nil {
		return c
	}
	if c.pb == nil {
		return Cmp{err: fmt.Errorf("%w: Compare needs a target made by Value, ModRevision, CreateRevision, Version, Exists or Fence", ErrInvalidArgument)}
	}
	pb := &catalogpb.Compare{Key: c.pb.Key, Target: c.pb.Target}
	switch op {
	case "=", "==":
		pb.Result = catalogpb.Compare_EQUAL
	case "!=":
		pb.Result = catalogpb.Compare_NOT_EQUAL
	case ">":
		pb.Result = catalogpb.Compare_GREATER
	case "<":
		pb.Result = catalogpb.Compare_LESS
	default:
		return Cmp{err: fmt.Errorf("%w: compare operator must be =, !=, > or <, got %q", ErrInvalidArgument, op)}
	}
	mismatch := func(want string) Cmp {
		return Cmp{err: fmt.Errorf("%w: compare of %s on key %q takes %s, got %T", ErrInvalidArgument, pb.Target, pb.Key, want, v)}
	}
	switch pb.Target {
	case catalogpb.Compare_VALUE:
		switch v := v.(type) {
		case string:
			pb.TargetUnion = &catalogpb.Compare_Value{Value: []byte(v)}
		case []byte:
			pb.TargetUnion = &catalogpb.Compare_Value{Value: v}
		default:
			return mismatch("a string or []byte")
		}
	case catalogpb.Compare_MOD, catalogpb.Compare_CREATE, catalogpb.Compare_VERSION:
		var n int64
		switch v := v.(type) {
		case int:
			n = int64(v)
		case int64:
			n = v
		default:
			return mismatch("an int or int64")
		}
		switch pb.Target {
		case catalogpb.Compare_MOD:
			pb.TargetUnion = &catalogpb.Compare_ModRevision{ModRevision: n}
		case catalogpb.Compare_CREATE:
			pb.TargetUnion = &catalogpb.Compare_CreateRevision{CreateRevision: n}
		default:
			pb.TargetUnion = &catalogpb.Compare_Version{Version: n}
		}
	case catalogpb.Compare_EXISTS:
		b, ok := v.(bool)
		if !ok {
			return mismatch("a bool")
		}
		if pb.Result != catalogpb.Compare_EQUAL && pb.Result != catalogpb.Compare_NOT_EQUAL {
			return Cmp{err: fmt.Errorf("%w: compare of EXISTS on key %q takes = or !=, got %q", ErrInvalidArgument, pb.Key, op)}
		}
		pb.TargetUnion = &catalogpb.Compare_Exists{Exists: b}
	case catalogpb.Compare_FENCE:
		held, ok := v.(bool)
		if !ok {
			return mismatch("a bool")
		}
		if pb.Result != catalogpb.Compare_EQUAL && pb.Result != catalogpb.Compare_NOT_EQUAL {
			return Cmp{err: fmt.Errorf("%w: compare of FENCE on lock %q takes = or !=, got %q", ErrInvalidArgument, pb.Key, op)}
		}
		// The server's FENCE compare holds with EQUAL while the token is
		// held: "!= true" and "= false" both ask that it is not.
		if !held {
			if pb.Result == catalogpb.Compare_EQUAL {
				pb.Result = catalogpb.Compare_NOT_EQUAL
			} else {
				pb.Result = catalogpb.Compare_EQUAL
			}
		}
		pb.TargetUnion = &catalogpb.Compare_FenceToken{FenceToken: c.pb.GetFenceToken()}
	}
	return Cmp{pb: pb}
}

// An Op is one operation of a transaction, made by OpPut, OpGet or OpDelete.
type Op struct {
	pb  *catalogpb.TxnOp
	err error
}

// OpPut is a Put inside a transaction; it takes the options Put takes.
func OpPut(key, value string, opts ...OpOption) Op {
	req, err := putRequest(key, value, opts)
	if err != nil {
		return Op{err: err}
	}
	return Op{pb: &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Put{Put: req}}}
}

// OpGet is a Get inside a transaction; it takes the options Get takes.
func OpGet(key string, opts ...OpOption) Op {
	req, err := getRequest(key, opts)
	if err != nil {
		return Op{err: err}
	}
	return Op{pb: &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Get{Get: req}}}
}

// OpDelete is a Delete inside a transaction; it takes the options Delete takes.
func OpDelete(key string, opts ...OpOption) Op {
	req, err := deleteRequest(key, opts)
	if err != nil {
		return Op{err: err}
	}
	return Op{pb: &catalogpb.TxnOp{Op: &catalogpb.TxnOp_Delete{Delete: req}}}
}

// A Txn builds a transaction in etcd's clientv3 style:
//
//	resp, err := c.NewTxn(ctx).
//		If(sdk.Compare(sdk.Version("k"), "=", 0)).
//		Then(sdk.OpPut("k", "v")).
//		Else(sdk.OpGet("k")).
//		Commit()
//
// Calls append: two If calls give the conditions of both.
type Txn struct {
	ctx  context.Context
	c    *Client
	req  *catalogpb.TxnRequest
	errs []error
}

// NewTxn starts a transaction that Commit sends with ctx.
func (c *Client) NewTxn(ctx context.Context) *Txn {
	return &Txn{ctx: ctx, c: c, req: &catalogpb.TxnRequest{}}
}

// If adds conditions; the Then operations run when all of them hold.
func (t *Txn) If(cmps ...Cmp) *Txn {
	for _, cmp := range cmps {
		if cmp.err != nil {
			t.errs = append(t.errs, cmp.err)
			continue
		}
		if cmp.pb == nil {
			t.errs = append(t.errs, fmt.Errorf("%w: If takes conditions made by Compare", ErrInvalidArgument))
			continue
		}
		t.req.Compare = append(t.req.Compare, cmp.pb)
	}
	return t
}

// Then adds operations that run when every condition holds.
func (t *Txn) Then(ops ...Op) *Txn {
	t.req.Success = t.appendOps(t.req.Success, ops)
	return t
}

// Else adds operations that run when a condition does not hold.
func (t *Txn) Else(ops ...Op) *Txn {
	t.req.Failure = t.appendOps(t.req.Failure, ops)
	return t
}

func (t *Txn) appendOps(dst []*catalogpb.TxnOp, ops []Op) []*catalogpb.TxnOp {
	for _, op := range ops {
		if op.err != nil {
			t.errs = append(t.errs, op.err)
			continue
		}
		if op.pb == nil {
			t.errs = append(t.errs, fmt.Errorf("%w: Then and Else take operations made by OpPut, OpGet or OpDelete", ErrInvalidArgument))
			continue
		}
		dst = append(dst, op.pb)
	}
	return dst
}

// Commit sends the transaction. If building it went wrong (a bad Compare or
// Op), it sends nothing and returns every mistake, each matching
// ErrInvalidArgument.
func (t *Txn) Commit() (*catalogpb.TxnResponse, error) {
	if len(t.errs) > 0 {
		return nil, fmt.Errorf("build transaction: %w", errors.Join(t.errs...))
	}
	return t.c.Txn(t.ctx, t.req)
}
