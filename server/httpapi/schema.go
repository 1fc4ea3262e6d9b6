package httpapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/graphql-go/graphql"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// A queryArea contributes the top-level Query fields of one area of the API.
// It may use the types every area shares and define its own.
type queryArea struct {
	name   string
	fields func(b Backend, shared *sharedTypes) graphql.Fields
}

// queryAreas lists every area of the Query type. A new area adds one line.
var queryAreas = []queryArea{
	{"cluster", clusterFields},
	{"kv", kvFields},
	{"registry", registryFields},
	{"lease", leaseFields},
	{"coordination", coordinationFields},
}

// sharedTypes are the GraphQL types more than one area uses. A GraphQL schema
// holds one type per name, so they are built once per schema and handed to
// every area rather than rebuilt by each.
type sharedTypes struct {
	header      *graphql.Object
	consistency *graphql.Enum
}

// Schema builds the GraphQL schema served over b.
func Schema(b Backend) (graphql.Schema, error) {
	shared := newSharedTypes()
	query := graphql.Fields{}
	definedBy := map[string]string{}
	for _, area := range queryAreas {
		fields := area.fields(b, shared)
		// Sorted so that a clash is reported the same way every time.
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if other, dup := definedBy[name]; dup {
				return graphql.Schema{}, fmt.Errorf("query field %q is defined by both the %s and the %s area", name, other, area.name)
			}
			definedBy[name] = area.name
			query[name] = fields[name]
		}
	}
	schema, err := graphql.NewSchema(graphql.SchemaConfig{
		Query: graphql.NewObject(graphql.ObjectConfig{Name: "Query", Fields: query}),
	})
	if err != nil {
		return graphql.Schema{}, err
	}
	// graphql-go fills an enum's lookup maps on first use without a lock; fill
	// them now, before concurrent requests can race to.
	shared.consistency.Serialize(catalogpb.Consistency_LINEARIZABLE)
	shared.consistency.ParseValue(catalogpb.Consistency_LINEARIZABLE.String())
	return schema, nil
}

func newSharedTypes() *sharedTypes {
	return &sharedTypes{
		header: graphql.NewObject(graphql.ObjectConfig{
			Name:        "ResponseHeader",
			Description: "Where and when an answer was served.",
			Fields: graphql.Fields{
				"clusterId": uint64Field("The cluster id.", (*catalogpb.ResponseHeader).GetClusterId),
				"memberId":  uint64Field("The id of the server that answered.", (*catalogpb.ResponseHeader).GetMemberId),
				"revision":  int64Field("The store revision the answer reflects.", (*catalogpb.ResponseHeader).GetRevision),
				"raftTerm":  uint64Field("The raft term of the answering server.", (*catalogpb.ResponseHeader).GetRaftTerm),
			},
		}),
		consistency: graphql.NewEnum(graphql.EnumConfig{
			Name:        "Consistency",
			Description: "How a read is served.",
			Values: graphql.EnumValueConfigMap{
				"LINEARIZABLE": {
					Value:       catalogpb.Consistency_LINEARIZABLE,
					Description: "Confirm leadership with a ReadIndex round and wait until this server has applied up to it.",
				},
				"SERIALIZABLE": {
					Value:       catalogpb.Consistency_SERIALIZABLE,
					Description: "Answer from this server's local state at once; may be stale.",
				},
			},
		}),
	}
}

// protoEnum builds a GraphQL enum of a protobuf enum: the same value names
// (as protojson writes them), resolving to the protobuf values.
func protoEnum[E ~int32](name, desc string, names map[int32]string, descs map[E]string) *graphql.Enum {
	values := graphql.EnumValueConfigMap{}
	for num, n := range names {
		values[n] = &graphql.EnumValueConfig{Value: E(num), Description: descs[E(num)]}
	}
	e := graphql.NewEnum(graphql.EnumConfig{Name: name, Description: desc, Values: values})
	// graphql-go fills an enum's lookup maps on first use without a lock;
	// fill them now, before concurrent requests can race to.
	for _, v := range e.Values() {
		e.Serialize(v.Value)
		e.ParseValue(v.Name)
	}
	return e
}

// consistencyArg returns the Consistency argument of a field, LINEARIZABLE
// (the enum's zero value) when absent or null.
func consistencyArg(p graphql.ResolveParams) catalogpb.Consistency {
	c, _ := p.Args["consistency"].(catalogpb.Consistency)
	return c
}

// The field helpers below resolve a scalar from a source of type S. Explicit
// getters, rather than graphql-go's reflection on struct fields, keep the
// schema names independent of the protobuf names and use the nil-safe getters.

func stringField[S any](desc string, get func(S) string) *graphql.Field {
	return scalarField(graphql.String, desc, func(s S) any { return get(s) })
}

func boolField[S any](desc string, get func(S) bool) *graphql.Field {
	return scalarField(graphql.Boolean, desc, func(s S) any { return get(s) })
}

// uint64Field renders a uint64 as a decimal String: GraphQL's Int is 32 bits.
func uint64Field[S any](desc string, get func(S) uint64) *graphql.Field {
	return scalarField(graphql.String, desc, func(s S) any { return strconv.FormatUint(get(s), 10) })
}

// int64Field renders an int64 as a decimal String: GraphQL's Int is 32 bits.
func int64Field[S any](desc string, get func(S) int64) *graphql.Field {
	return scalarField(graphql.String, desc, func(s S) any { return strconv.FormatInt(get(s), 10) })
}

func scalarField[S any](typ graphql.Output, desc string, get func(S) any) *graphql.Field {
	return &graphql.Field{
		Type:        graphql.NewNonNull(typ),
		Description: desc,
		Resolve: func(p graphql.ResolveParams) (any, error) {
			src, err := sourceAs[S](p)
			if err != nil {
				return nil, err
			}
			return get(src), nil
		},
	}
}

func sourceAs[S any](p graphql.ResolveParams) (S, error) {
	src, ok := p.Source.(S)
	if !ok {
		return src, fmt.Errorf("internal error: field %s.%s resolved on %T, want %T", p.Info.ParentType.Name(), p.Info.FieldName, p.Source, src)
	}
	return src, nil
}

// A fieldError is a failed field as a GraphQL client sees it: the message,
// plus the gRPC code and catalogd reason in the error's extensions.
type fieldError struct {
	msg  string
	code codes.Code
	// reason is the catalogpb.ErrorReason name, or "" when there is none.
	reason string
}

func (e *fieldError) Error() string { return e.msg }

// Extensions implements graphql-go's gqlerrors.ExtendedError.
func (e *fieldError) Extensions() map[string]any {
	ext := map[string]any{"code": e.code.String()}
	if e.reason != "" {
		ext["reason"] = e.reason
	}
	return ext
}

func invalidArgument(reason catalogpb.ErrorReason, format string, args ...any) error {
	return &fieldError{msg: fmt.Sprintf(format, args...), code: codes.InvalidArgument, reason: reason.String()}
}

// errorDomain is the ErrorInfo domain of catalogd's own reasons.
const errorDomain = "catalogd"

// backendError turns an error from the Backend into a fieldError: a gRPC
// status keeps its message, code and ErrorInfo reason; a context error keeps
// its code; anything else is Unknown with its text.
func backendError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &fieldError{msg: err.Error(), code: status.FromContextError(err).Code()}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &fieldError{msg: err.Error(), code: codes.Unknown}
	}
	fe := &fieldError{msg: st.Message(), code: st.Code()}
	for _, detail := range st.Details() {
		info, ok := detail.(*errdetails.ErrorInfo)
		if ok && info.GetDomain() == errorDomain {
			fe.reason = info.GetReason()
		}
	}
	return fe
}

// statusOnce makes at most one Backend.Status call per request.
type statusOnce struct {
	once sync.Once
	resp *catalogpb.StatusResponse
	err  error
}

// loadStatus calls b.Status once per request (once per call when ctx carries
// no request state, as when the schema is run outside the handler).
func loadStatus(ctx context.Context, b Backend) (*catalogpb.StatusResponse, error) {
	rs := requestStateFrom(ctx)
	if rs == nil {
		return b.Status(ctx)
	}
	rs.status.once.Do(func() { rs.status.resp, rs.status.err = b.Status(ctx) })
	return rs.status.resp, rs.status.err
}
