package faultdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// webhookRow is a registered webhook with its sealed secret and its cursor
// into the event log.
type webhookRow struct {
	ID                  string `gorm:"primaryKey;size:36"` // UUIDv7: ordered by creation
	URL                 string `gorm:"size:2048;not null"`
	Description         string `gorm:"size:200"`
	Filter              string // JSON of webhook.Filter
	Enabled             bool
	CreatedBy           string `gorm:"size:63"`
	CreatedAt           time.Time
	Secret              []byte `gorm:"not null"` // sealed (internal/sealed); never leaves the package unsealed
	Epoch               string `gorm:"size:36"`  // the event log's epoch of CursorSeq
	CursorSeq           uint64 // the last event-log sequence number handled
	Delivered           uint64
	Missed              uint64
	ConsecutiveFailures int
	LastAttemptAt       *time.Time
	LastSuccessAt       *time.Time
	LastError           string `gorm:"size:1024"`
	LastErrorAt         *time.Time
}

func (webhookRow) TableName() string { return "fm_webhooks" }

// migrateWebhooks creates or updates the webhook table; Open calls it.
func migrateWebhooks(ctx context.Context, db *sqldb.DB) error {
	if err := sqldb.Migrate(ctx, db, &webhookRow{}); err != nil {
		return fmt.Errorf("faultdb: migrate webhooks: %w", err)
	}
	return nil
}

var _ webhook.Store = (*Store)(nil)

func toWebhook(r webhookRow) (webhook.Webhook, error) {
	w := webhook.Webhook{ID: r.ID, URL: r.URL, Description: r.Description, Enabled: r.Enabled, CreatedBy: r.CreatedBy,
		CreatedAt: r.CreatedAt.UTC(), Epoch: r.Epoch,
		Status: webhook.Status{Cursor: r.CursorSeq, Delivered: r.Delivered, Missed: r.Missed,
			ConsecutiveFailures: r.ConsecutiveFailures, LastAttemptAt: utc(r.LastAttemptAt),
			LastSuccessAt: utc(r.LastSuccessAt), LastError: r.LastError, LastErrorAt: utc(r.LastErrorAt)}}
	if err := json.Unmarshal([]byte(r.Filter), &w.Filter); err != nil {
		return webhook.Webhook{}, fmt.Errorf("faultdb: webhook %s: filter: %w", r.ID, err)
	}
	var err error
	if w.Filter, err = w.Filter.Validate(); err != nil { // normalises: never nil lists
		return webhook.Webhook{}, fmt.Errorf("faultdb: webhook %s: stored filter: %w", r.ID, err)
	}
	return w, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func filterJSON(f webhook.Filter) string {
	b, _ := json.Marshal(f) // a Filter always marshals
	return string(b)
}

// maxErrorText bounds a stored delivery error.
const maxErrorText = 1024

func (s *Store) CreateWebhook(ctx context.Context, w webhook.Webhook, sealedSecret []byte) error {
	r := webhookRow{ID: w.ID, URL: w.URL, Description: w.Description, Filter: filterJSON(w.Filter), Enabled: w.Enabled,
		CreatedBy: w.CreatedBy, CreatedAt: w.CreatedAt.UTC(), Secret: sealedSecret, Epoch: w.Epoch, CursorSeq: w.Status.Cursor}
	return s.db.WithContext(ctx).Create(&r).Error
}

func (s *Store) webhookRow(ctx context.Context, id string, cols ...string) (webhookRow, error) {
	var r webhookRow
	q := s.db.WithContext(ctx)
	if len(cols) > 0 {
		q = q.Select(cols)
	}
	err := q.Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, fmt.Errorf("%w: %s", webhook.ErrNotFound, id)
	}
	return r, err
}

// webhookColumns are every column but the secret.
var webhookColumns = []string{"id", "url", "description", "filter", "enabled", "created_by", "created_at", "epoch",
	"cursor_seq", "delivered", "missed", "consecutive_failures", "last_attempt_at", "last_success_at", "last_error", "last_error_at"}

func (s *Store) Webhook(ctx context.Context, id string) (webhook.Webhook, error) {
	r, err := s.webhookRow(ctx, id, webhookColumns...)
	if err != nil {
		return webhook.Webhook{}, err
	}
	return toWebhook(r)
}

func (s *Store) WebhookSecret(ctx context.Context, id string) ([]byte, error) {
	r, err := s.webhookRow(ctx, id, "id", "secret")
	return r.Secret, err
}

func (s *Store) Webhooks(ctx context.Context, opts page.Options) ([]webhook.Webhook, string, error) {
	var rows []webhookRow
	q := s.db.WithContext(ctx).Model(&webhookRow{}).Select(webhookColumns)
	if err := sqldb.Page(q, "id", opts.After, opts.Limit).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	rows, next := sqldb.Trim(rows, opts.Limit, func(r webhookRow) string { return r.ID })
	out := make([]webhook.Webhook, len(rows))
	for i, r := range rows {
		w, err := toWebhook(r)
		if err != nil {
			return nil, "", err
		}
		out[i] = w
	}
	return out, next, nil
}

func (s *Store) CountWebhooks(ctx context.Context) (int, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&webhookRow{}).Count(&n).Error
	return int(n), err
}

func (s *Store) UpdateWebhook(ctx context.Context, w webhook.Webhook) error {
	res := s.db.WithContext(ctx).Model(&webhookRow{}).Where("id = ?", w.ID).
		Updates(map[string]any{"description": w.Description, "filter": filterJSON(w.Filter), "enabled": w.Enabled})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", webhook.ErrNotFound, w.ID)
	}
	return nil
}

func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	res := s.db.WithContext(ctx).Where("id = ?", id).Delete(&webhookRow{})
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s", webhook.ErrNotFound, id)
	}
	return nil
}

func (s *Store) SaveWebhookStatus(ctx context.Context, id, epoch string, st webhook.Status) error {
	e := st.LastError
	if len(e) > maxErrorText {
		e = e[:maxErrorText]
	}
	return s.db.WithContext(ctx).Model(&webhookRow{}).Where("id = ?", id).Updates(map[string]any{
		"epoch": epoch, "cursor_seq": st.Cursor, "delivered": st.Delivered, "missed": st.Missed,
		"consecutive_failures": st.ConsecutiveFailures, "last_attempt_at": utc(st.LastAttemptAt),
		"last_success_at": utc(st.LastSuccessAt), "last_error": e, "last_error_at": utc(st.LastErrorAt),
	}).Error
}

// WebhookFloor is the lowest cursor of the enabled webhooks in the log's
// current epoch: history above it is still to be delivered, so a trim
// should keep it (TrimPolicy.Floor). ok is false when no webhook waits.
func (s *Store) WebhookFloor(ctx context.Context) (floor uint64, ok bool, err error) {
	var min *uint64
	err = s.db.WithContext(ctx).Model(&webhookRow{}).Select("MIN(cursor_seq)").
		Where("enabled = ? AND epoch = ?", true, s.Epoch()).Scan(&min).Error
	if err != nil || min == nil {
		return 0, false, err
	}
	return *min, true, nil
}
