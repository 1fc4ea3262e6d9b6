package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/graphql-go/graphql"
)

// graphqlHandler serves POST and GET /graphql.
type graphqlHandler struct {
	schema graphql.Schema
	logger *slog.Logger
}

// graphqlRequest is the body of a GraphQL-over-HTTP request.
type graphqlRequest struct {
	Query         string         `json:"query"`
	Variables     map[string]any `json:"variables"`
	OperationName string         `json:"operationName"`
}

// A requestError is a request that cannot be run at all; it becomes an HTTP
// 4xx with a GraphQL-shaped errors body.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func (h *graphqlHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req graphqlRequest
	var err error
	if r.Method == http.MethodGet {
		req, err = readGraphQLQuery(r)
	} else {
		req, err = readGraphQLBody(w, r)
	}
	if err != nil {
		var rerr *requestError
		if !errors.As(err, &rerr) {
			rerr = &requestError{status: http.StatusBadRequest, msg: err.Error()}
		}
		h.logger.Debug("graphql request refused", "status", rerr.status, "err", rerr.msg)
		writeJSON(w, rerr.status, map[string]any{"errors": []map[string]string{{"message": rerr.msg}}}, h.logger)
		return
	}

	result := graphql.Do(graphql.Params{
		Schema:         h.schema,
		RequestString:  req.Query,
		VariableValues: req.Variables,
		OperationName:  req.OperationName,
		Context:        withRequestState(r.Context()),
	})
	if len(result.Errors) > 0 {
		h.logger.Debug("graphql request had errors", "errors", len(result.Errors), "first", result.Errors[0].Message)
	}
	writeJSON(w, http.StatusOK, result, h.logger)
}

// readGraphQLBody reads a POST: a JSON body, or with Content-Type
// application/graphql, the query text itself.
func readGraphQLBody(w http.ResponseWriter, r *http.Request) (graphqlRequest, error) {
	var req graphqlRequest
	// Only JSON (and raw GraphQL) are accepted: a browser can send a form or
	// text/plain cross-site without asking, so refusing them keeps a page on
	// another origin from running operations here.
	mediaType := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return req, badRequest("Content-Type %q cannot be parsed: %v", ct, err)
		}
		mediaType = mt
	}
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	switch mediaType {
	case "application/json":
		return decodeGraphQLJSON(body)
	case "application/graphql":
		text, err := io.ReadAll(body)
		if err != nil {
			return req, bodyReadError(err)
		}
		req.Query = string(text)
		return req, checkQuery(req)
	default:
		return req, &requestError{
			status: http.StatusUnsupportedMediaType,
			msg:    fmt.Sprintf("Content-Type must be application/json or application/graphql, got %q", mediaType),
		}
	}
}

func decodeGraphQLJSON(body io.Reader) (graphqlRequest, error) {
	var req graphqlRequest
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		return req, jsonBodyError(err)
	}
	switch err := dec.Decode(&struct{}{}); {
	case err == io.EOF:
	case isBodyTooLarge(err):
		return req, bodyReadError(err)
	default:
		return req, badRequest("body must hold exactly one JSON object; found more after it")
	}
	return req, checkQuery(req)
}

// readGraphQLQuery reads a GET: query, variables (JSON) and operationName
// from the URL.
func readGraphQLQuery(r *http.Request) (graphqlRequest, error) {
	params := r.URL.Query()
	req := graphqlRequest{
		Query:         params.Get("query"),
		OperationName: params.Get("operationName"),
	}
	if v := params.Get("variables"); v != "" {
		if err := json.Unmarshal([]byte(v), &req.Variables); err != nil {
			return req, badRequest("URL parameter variables must be a JSON object: %v", err)
		}
	}
	if strings.TrimSpace(req.Query) == "" {
		return req, badRequest(`URL parameter query is required, e.g. /graphql?query={cluster{name}}`)
	}
	return req, nil
}

func checkQuery(req graphqlRequest) error {
	if strings.TrimSpace(req.Query) == "" {
		return badRequest(`query is empty; send {"query": "{ cluster { name } }"}`)
	}
	return nil
}

// jsonBodyError says what is wrong with a body that did not decode.
func jsonBodyError(err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case isBodyTooLarge(err):
		return bodyReadError(err)
	case errors.Is(err, io.EOF):
		return badRequest(`body is empty; send {"query": "{ cluster { name } }"}`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("body is not valid JSON: it ends in the middle of a value")
	case errors.As(err, &syntaxErr):
		return badRequest("body is not valid JSON: %v (at byte %d)", syntaxErr, syntaxErr.Offset)
	case errors.As(err, &typeErr):
		want, known := map[string]string{
			"query":         "a string",
			"variables":     "an object",
			"operationName": "a string",
		}[typeErr.Field]
		if !known {
			return badRequest(`body must be a JSON object like {"query": "..."}, got a JSON %s`, typeErr.Value)
		}
		return badRequest("%s must be %s, got a JSON %s", typeErr.Field, want, typeErr.Value)
	}
	return bodyReadError(err)
}

func bodyReadError(err error) error {
	if isBodyTooLarge(err) {
		return &requestError{
			status: http.StatusRequestEntityTooLarge,
			msg:    fmt.Sprintf("body must be at most %d bytes", maxBodyBytes),
		}
	}
	return badRequest("read body: %v", err)
}

func isBodyTooLarge(err error) bool {
	var tooLarge *http.MaxBytesError
	return errors.As(err, &tooLarge)
}

func writeJSON(w http.ResponseWriter, code int, v any, logger *slog.Logger) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// The status line is gone; all that is left is to say so.
		logger.Warn("write graphql response", "err", err)
	}
}

// requestState is what resolvers of one request share, so a query naming
// several fields backed by one Backend call makes that call once.
type requestState struct {
	status statusOnce
}

type requestStateKey struct{}

func withRequestState(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestStateKey{}, &requestState{})
}

func requestStateFrom(ctx context.Context) *requestState {
	rs, _ := ctx.Value(requestStateKey{}).(*requestState)
	return rs
}
