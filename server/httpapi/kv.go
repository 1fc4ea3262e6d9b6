package httpapi

import (
	"encoding/base64"
	"math"

	"github.com/graphql-go/graphql"
	"google.golang.org/grpc/codes"

	"github.com/catalogd/catalogd/api/catalogpb"
)

const (
	defaultRangeLimit = 100
	// maxRangeLimit is the server's cap on one page (GetRequest.limit).
	maxRangeLimit = 10000
)

// pageTokenEncoding encodes next_token for GraphQL: URL-safe, so a client can
// put it in a GET /graphql URL without escaping.
var pageTokenEncoding = base64.RawURLEncoding

// kvFields is the config key-value area: single keys and paged prefix ranges,
// read through Backend.Get.
func kvFields(b Backend, shared *sharedTypes) graphql.Fields {
	type kv = *catalogpb.KeyValue
	keyValue := graphql.NewObject(graphql.ObjectConfig{
		Name:        "KeyValue",
		Description: "One config key.",
		Fields: graphql.Fields{
			"key": stringField("The key.", func(k kv) string { return string(k.GetKey()) }),
			"value": stringField("The value as text. A value that is not UTF-8 is mangled here; read valueBase64 for it.",
				func(k kv) string { return string(k.GetValue()) }),
			"valueBase64": stringField("The value, standard base64: exact for any bytes.",
				func(k kv) string { return base64.StdEncoding.EncodeToString(k.GetValue()) }),
			"createRevision": int64Field("The revision that created the key.", kv.GetCreateRevision),
			"modRevision":    int64Field("The revision that last wrote the key.", kv.GetModRevision),
			"version":        int64Field("Writes to the key since it was created (1 after the create).", kv.GetVersion),
			"lease":          int64Field(`The lease the key is attached to, "0" for none.`, kv.GetLease),
		},
	})

	type page = *catalogpb.GetResponse
	kvPage := graphql.NewObject(graphql.ObjectConfig{
		Name:        "KVPage",
		Description: "One page of a prefix range.",
		Fields: graphql.Fields{
			"items": &graphql.Field{
				Type: graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(keyValue))),
				Resolve: func(p graphql.ResolveParams) (any, error) {
					resp, err := sourceAs[page](p)
					if err != nil {
						return nil, err
					}
					return resp.GetKvs(), nil
				},
			},
			"more": boolField("Whether the range holds keys past this page.", page.GetMore),
			"next": &graphql.Field{
				Type:        graphql.String,
				Description: "When more is true, the after argument that reads the next page; null otherwise.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					resp, err := sourceAs[page](p)
					if err != nil {
						return nil, err
					}
					if !resp.GetMore() || len(resp.GetNextToken()) == 0 {
						return nil, nil
					}
					return pageTokenEncoding.EncodeToString(resp.GetNextToken()), nil
				},
			},
			"count": &graphql.Field{
				Type:        graphql.NewNonNull(graphql.Int),
				Description: "The number of keys in the whole range, not only this page.",
				Resolve: func(p graphql.ResolveParams) (any, error) {
					resp, err := sourceAs[page](p)
					if err != nil {
						return nil, err
					}
					if resp.GetCount() > math.MaxInt32 {
						return nil, &fieldError{msg: "count exceeds GraphQL's 32-bit Int; narrow the prefix", code: codes.OutOfRange}
					}
					return int(resp.GetCount()), nil
				},
			},
			"revision": int64Field("The store revision the page was read at.", func(r page) int64 { return r.GetHeader().GetRevision() }),
			"staleByIndex": uint64Field(`For a SERIALIZABLE read, how many committed raft entries the answering server `+
				`had not applied yet ("0" when caught up).`, page.GetStaleByIndex),
		},
	})

	consistencyArgConfig := &graphql.ArgumentConfig{
		Type: shared.consistency,
		// No DefaultValue: graphql-go v0.8.1 introspects an enum default as a
		// quoted string, which is not a valid literal for an enum; absent,
		// the argument reads as LINEARIZABLE, the zero value, anyway.
		Description: "How the read is served; LINEARIZABLE when omitted.",
	}

	return graphql.Fields{
		"kv": &graphql.Field{
			Type:        keyValue,
			Description: "One key, or null when it does not exist.",
			Args: graphql.FieldConfigArgument{
				"key":         {Type: graphql.NewNonNull(graphql.String)},
				"consistency": consistencyArgConfig,
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				key, _ := p.Args["key"].(string)
				resp, err := b.Get(p.Context, &catalogpb.GetRequest{
					Key:         []byte(key),
					Consistency: consistencyArg(p),
				})
				if err != nil {
					return nil, backendError(err)
				}
				if len(resp.GetKvs()) == 0 {
					return nil, nil
				}
				return resp.GetKvs()[0], nil
			},
		},
		"kvRange": &graphql.Field{
			Type:        graphql.NewNonNull(kvPage),
			Description: "The keys that start with prefix, in key order, one page at a time.",
			Args: graphql.FieldConfigArgument{
				"prefix": {Type: graphql.NewNonNull(graphql.String)},
				"limit": {
					Type:         graphql.Int,
					DefaultValue: defaultRangeLimit,
					Description:  "Keys per page, 1..10000.",
				},
				"after": {
					Type:        graphql.String,
					Description: "The next value of the previous page; omit for the first page.",
				},
				"consistency": consistencyArgConfig,
				"keysOnly": {
					Type:         graphql.Boolean,
					DefaultValue: false,
					Description:  "Return keys and revisions without values.",
				},
			},
			Resolve: func(p graphql.ResolveParams) (any, error) {
				req, err := rangeRequest(p)
				if err != nil {
					return nil, err
				}
				resp, err := b.Get(p.Context, req)
				if err != nil {
					return nil, backendError(err)
				}
				return resp, nil
			},
		},
	}
}

// rangeRequest checks the arguments of kvRange and builds its GetRequest.
func rangeRequest(p graphql.ResolveParams) (*catalogpb.GetRequest, error) {
	prefix, _ := p.Args["prefix"].(string)
	limit, ok := p.Args["limit"].(int)
	if !ok {
		// An explicit null.
		limit = defaultRangeLimit
	}
	if limit < 1 || limit > maxRangeLimit {
		return nil, invalidArgument(catalogpb.ErrorReason_INVALID_LIMIT, "limit must be 1..%d, got %d", maxRangeLimit, limit)
	}
	var token []byte
	if after, _ := p.Args["after"].(string); after != "" {
		var err error
		if token, err = pageTokenEncoding.DecodeString(after); err != nil {
			return nil, invalidArgument(catalogpb.ErrorReason_INVALID_CONTINUE_TOKEN,
				"after must be the next value of an earlier kvRange page (URL-safe base64 without padding), got %q: %v", after, err)
		}
	}
	keysOnly, _ := p.Args["keysOnly"].(bool)
	return &catalogpb.GetRequest{
		Key:           []byte(prefix),
		Prefix:        true,
		Limit:         int64(limit),
		ContinueToken: token,
		Consistency:   consistencyArg(p),
		KeysOnly:      keysOnly,
	}, nil
}
