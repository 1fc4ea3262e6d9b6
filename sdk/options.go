package sdk

import (
	"fmt"
	"strings"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// An OpOption changes one Put, Get or Delete (or the Op of a transaction).
// Giving an option to an operation it does not apply to is an error that
// names the options the operation takes.
type OpOption func(*opSettings)

type optionSet uint16

const (
	optPrefix optionSet = 1 << iota
	optLimit
	optContinue
	optSerializable
	optKeysOnly
	optCountOnly
	optPrevKV
	optLease
)

// optionNames lists the options in the order they are reported.
var optionNames = []struct {
	opt  optionSet
	name string
}{
	{optPrefix, "WithPrefix"},
	{optLimit, "WithLimit"},
	{optContinue, "WithContinue"},
	{optSerializable, "WithSerializable"},
	{optKeysOnly, "WithKeysOnly"},
	{optCountOnly, "WithCountOnly"},
	{optPrevKV, "WithPrevKV"},
	{optLease, "WithLease"},
}

const (
	putOptions    = optPrevKV | optLease
	getOptions    = optPrefix | optLimit | optContinue | optSerializable | optKeysOnly | optCountOnly
	deleteOptions = optPrefix | optPrevKV
)

type opSettings struct {
	set           optionSet
	prefix        bool
	limit         int64
	continueToken []byte
	serializable  bool
	keysOnly      bool
	countOnly     bool
	prevKV        bool
	lease         int64
}

// WithPrefix makes Get or Delete act on every key starting with the key.
func WithPrefix() OpOption {
	return func(s *opSettings) { s.set |= optPrefix; s.prefix = true }
}

// WithLimit caps the number of keys a Get returns; 0 means the server maximum.
func WithLimit(n int64) OpOption {
	return func(s *opSettings) { s.set |= optLimit; s.limit = n }
}

// WithContinue resumes a Get where an earlier page stopped: pass that
// response's NextToken.
func WithContinue(token []byte) OpOption {
	return func(s *opSettings) { s.set |= optContinue; s.continueToken = token }
}

// WithSerializable makes a Get answer from the contacted server's local state
// at once instead of confirming it is up to date (a linearizable read).
func WithSerializable() OpOption {
	return func(s *opSettings) { s.set |= optSerializable; s.serializable = true }
}

// WithKeysOnly makes a Get return keys without values.
func WithKeysOnly() OpOption {
	return func(s *opSettings) { s.set |= optKeysOnly; s.keysOnly = true }
}

// WithCountOnly makes a Get return only the number of keys.
func WithCountOnly() OpOption {
	return func(s *opSettings) { s.set |= optCountOnly; s.countOnly = true }
}

// WithPrevKV makes a Put or Delete return the key-values it replaced.
func WithPrevKV() OpOption {
	return func(s *opSettings) { s.set |= optPrevKV; s.prevKV = true }
}

// WithLease attaches the key of a Put to a lease.
func WithLease(id int64) OpOption {
	return func(s *opSettings) { s.set |= optLease; s.lease = id }
}

func applyOptions(opName string, allowed optionSet, opts []OpOption) (opSettings, error) {
	var s opSettings
	for _, opt := range opts {
		if opt != nil {
			opt(&s)
		}
	}
	if extra := s.set &^ allowed; extra != 0 {
		return s, fmt.Errorf("%w: %s does not take %s (it takes %s)",
			ErrInvalidArgument, opName, optionList(extra), optionList(allowed))
	}
	return s, nil
}

func optionList(set optionSet) string {
	var names []string
	for _, o := range optionNames {
		if set&o.opt != 0 {
			names = append(names, o.name)
		}
	}
	return strings.Join(names, ", ")
}

func putRequest(key, value string, opts []OpOption) (*catalogpb.PutRequest, error) {
	s, err := applyOptions("Put", putOptions, opts)
	if err != nil {
		return nil, err
	}
	return &catalogpb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: s.lease, PrevKv: s.prevKV}, nil
}

func getRequest(key string, opts []OpOption) (*catalogpb.GetRequest, error) {
	s, err := applyOptions("Get", getOptions, opts)
	if err != nil {
		return nil, err
	}
	req := &catalogpb.GetRequest{
		Key:           []byte(key),
		Prefix:        s.prefix,
		Limit:         s.limit,
		ContinueToken: s.continueToken,
		KeysOnly:      s.keysOnly,
		CountOnly:     s.countOnly,
	}
	if s.serializable {
		req.Consistency = catalogpb.Consistency_SERIALIZABLE
	}
	return req, nil
}

func deleteRequest(key string, opts []OpOption) (*catalogpb.DeleteRequest, error) {
	s, err := applyOptions("Delete", deleteOptions, opts)
	if err != nil {
		return nil, err
	}
	return &catalogpb.DeleteRequest{Key: []byte(key), Prefix: s.prefix, PrevKv: s.prevKV}, nil
}
