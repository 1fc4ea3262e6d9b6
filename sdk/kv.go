package sdk

import (
	"context"

	"github.com/catalogd/catalogd/api/catalogpb"
)

// Put sets key to value. It is retried only when the cluster had no leader.
// Options: WithPrevKV, WithLease.
func (c *Client) Put(ctx context.Context, key, value string, opts ...OpOption) (*catalogpb.PutResponse, error) {
	req, err := putRequest(key, value, opts)
	if err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.PutResponse, error) {
		return c.kv.Put(ctx, req)
	})
}

// Get reads key (or, WithPrefix, every key under it). It is retried while
// servers are unavailable. Options: WithPrefix, WithLimit, WithContinue,
// WithSerializable, WithKeysOnly, WithCountOnly.
func (c *Client) Get(ctx context.Context, key string, opts ...OpOption) (*catalogpb.GetResponse, error) {
	req, err := getRequest(key, opts)
	if err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryReads, func(ctx context.Context) (*catalogpb.GetResponse, error) {
		return c.kv.Get(ctx, req)
	})
}

// Delete removes key (or, WithPrefix, every key under it). It is retried only
// when the cluster had no leader. Options: WithPrefix, WithPrevKV.
func (c *Client) Delete(ctx context.Context, key string, opts ...OpOption) (*catalogpb.DeleteResponse, error) {
	req, err := deleteRequest(key, opts)
	if err != nil {
		return nil, err
	}
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.DeleteResponse, error) {
		return c.kv.Delete(ctx, req)
	})
}

// Txn sends a transaction as built by the caller. It is retried only when the
// cluster had no leader. NewTxn builds one with compare helpers instead.
func (c *Client) Txn(ctx context.Context, req *catalogpb.TxnRequest) (*catalogpb.TxnResponse, error) {
	return invoke(ctx, c, retryWrites, func(ctx context.Context) (*catalogpb.TxnResponse, error) {
		return c.kv.Txn(ctx, req)
	})
}
