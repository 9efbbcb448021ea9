package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
)

// tryState is a configuration applied in TRY mode: in force, not stored,
// rolled back to the stored configuration when its timer fires.
type tryState struct {
	raw      []byte
	timer    *time.Timer
	deadline time.Time
}

// ApplyConfiguration validates a machine config and applies it in the
// requested mode. Nothing changes when the config is invalid, for a dry
// run, or when the mode cannot be honoured.
func (d *Daemon) ApplyConfiguration(ctx context.Context, req server.ApplyRequest) (*server.ApplyResult, error) {
	// An apply runs to its end even if the caller goes away: a half-done
	// apply would be rolled back, which is not what the caller asked for.
	ctx = context.WithoutCancel(ctx)
	cfg, err := config.Parse(req.Data)
	if err != nil {
		return nil, fmt.Errorf("invalid machine configuration: %w", err)
	}
	// Leaving maintenance mode first prepares for services (on a node: EPHEMERAL
	// and the late modules, which can take a while), without the lock, so that
	// other calls are answered meanwhile; activate then finds it done. A refused
	// mode has prepared for the next apply.
	if d.prepare != nil && !req.DryRun {
		d.mu.Lock()
		maintenance := d.cfg == nil
		d.mu.Unlock()
		if maintenance {
			d.prepare()
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.cfg
	reasons := config.RebootRequired(old, cfg)
	res := &server.ApplyResult{
		Diff:           config.Diff(old, cfg),
		RebootRequired: len(reasons) > 0,
		Warnings:       cfg.Warnings(),
	}
	mode, err := resolveMode(req.Mode, old == nil, reasons)
	if err != nil {
		return nil, err
	}
	res.Mode = mode
	if req.DryRun {
		res.Message = dryRunMessage(mode, old == nil, res)
		return res, nil
	}

	attrs := map[string]string{"mode": modeName(mode), "checksum": checksum(req.Data)}
	switch mode {
	case machine.ApplyMode_APPLY_MODE_STAGED:
		if err := d.store.SaveStaged(req.Data); err != nil {
			return nil, err
		}
		res.Message = "configuration staged: it takes effect at the next boot"
		d.bus.Publish("config.staged", res.Message, attrs)

	case machine.ApplyMode_APPLY_MODE_REBOOT:
		if err := d.store.Save(req.Data); err != nil {
			return nil, err
		}
		res.Message = "configuration stored; rebooting to apply it"
		if len(reasons) > 0 {
			res.Message += " (changed: " + strings.Join(reasons, ", ") + ")"
		}
		d.cancelTry()
		d.bus.Publish("config.applied", res.Message, attrs)
		d.bus.Publish("machine.reboot", "reboot to apply the configuration", nil)
		d.requestPower(PowerReboot)

	case machine.ApplyMode_APPLY_MODE_TRY:
		timeout := req.TryTimeout
		if timeout <= 0 {
			timeout = d.opts.TryTimeout
		}
		if err := d.activate(ctx, cfg, req.Data, false); err != nil {
			return nil, err
		}
		d.startTry(req.Data, timeout)
		res.Message = fmt.Sprintf("configuration applied for %s: confirm it (ConfirmConfiguration) or it is rolled back", timeout)
		attrs["timeout"] = timeout.String()
		d.bus.Publish("config.try", res.Message, attrs)

	default: // NO_REBOOT
		maintenance := old == nil
		if err := d.activate(ctx, cfg, req.Data, true); err != nil {
			return nil, err
		}
		d.cancelTry()
		res.Message = "configuration applied"
		if maintenance {
			res.Message = "configuration applied: the node left maintenance mode; use client certificates from now on"
		}
		d.bus.Publish("config.applied", res.Message, attrs)
	}
	d.log.Info("configuration applied", "mode", modeName(mode), "reboot_required", res.RebootRequired, "checksum", attrs["checksum"])
	return res, nil
}

// resolveMode decides the mode an apply runs in. In maintenance mode there is
// nothing to reboot away from: every mode but STAGED applies live.
func resolveMode(m machine.ApplyMode, maintenance bool, reasons []string) (machine.ApplyMode, error) {
	if maintenance {
		switch m {
		case machine.ApplyMode_APPLY_MODE_STAGED:
			return m, nil
		case machine.ApplyMode_APPLY_MODE_TRY:
			// Rolling back would mean returning to maintenance mode, open
			// to anyone on the network; refuse rather than pretend.
			return 0, fmt.Errorf("%w: TRY needs a configuration in force to roll back to; apply the first configuration in AUTO mode", server.ErrPrecondition)
		default:
			return machine.ApplyMode_APPLY_MODE_NO_REBOOT, nil
		}
	}
	reboot := len(reasons) > 0
	switch m {
	case machine.ApplyMode_APPLY_MODE_AUTO:
		if reboot {
			return machine.ApplyMode_APPLY_MODE_REBOOT, nil
		}
		return machine.ApplyMode_APPLY_MODE_NO_REBOOT, nil
	case machine.ApplyMode_APPLY_MODE_NO_REBOOT, machine.ApplyMode_APPLY_MODE_TRY:
		if reboot {
			return 0, fmt.Errorf("%w: %s cannot be applied without a reboot; use mode AUTO, REBOOT or STAGED",
				server.ErrRebootRequired, strings.Join(reasons, ", "))
		}
		return m, nil
	case machine.ApplyMode_APPLY_MODE_REBOOT, machine.ApplyMode_APPLY_MODE_STAGED:
		return m, nil
	}
	return 0, fmt.Errorf("%w: unknown apply mode %v", server.ErrInvalidArgument, m)
}

func dryRunMessage(mode machine.ApplyMode, maintenance bool, res *server.ApplyResult) string {
	var what string
	switch mode {
	case machine.ApplyMode_APPLY_MODE_STAGED:
		what = "would be staged for the next boot"
	case machine.ApplyMode_APPLY_MODE_REBOOT:
		what = "would be stored and the node rebooted"
	case machine.ApplyMode_APPLY_MODE_TRY:
		what = "would be applied until confirmed or rolled back"
	default:
		what = "would be applied without a reboot"
		if maintenance {
			what += " (the node would leave maintenance mode)"
		}
	}
	if res.Diff == "" {
		what += "; no change"
	}
	return "dry run: configuration is valid and " + what
}

func modeName(m machine.ApplyMode) string {
	return strings.TrimPrefix(m.String(), "APPLY_MODE_")
}

func checksum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// activate makes cfg the configuration in force, storing it first when
// persist is set. If it cannot be brought into force, the previous
// configuration is restored in the store and in force, and the error says
// so. Called with d.mu held.
func (d *Daemon) activate(ctx context.Context, cfg *config.Config, raw []byte, persist bool) error {
	prev, prevRaw := d.cfg, d.raw
	if prev == nil && d.prepare != nil {
		d.prepare()
	}
	// Leaving maintenance mode stores after reconciling: the store cannot
	// delete a config, so storing first would leave one behind if the
	// first reconcile failed. Later applies store first, so that a crash
	// in the middle comes back with the configuration being applied.
	storeFirst := persist && prev != nil
	var prevStored []byte
	if storeFirst {
		var err error
		if prevStored, err = d.store.Load(); err != nil {
			return fmt.Errorf("read the stored configuration: %w", err)
		}
		if err := d.store.Save(raw); err != nil {
			return err
		}
	}
	err := d.reconcile(ctx, cfg)
	if err == nil && persist && !storeFirst {
		err = d.store.Save(raw)
	}
	if err == nil {
		d.cfg, d.raw = cfg, raw
		return nil
	}

	d.log.Error("configuration not applied; restoring the previous one", "err", err)
	var restoreErrs []error
	if storeFirst {
		if serr := d.store.Save(prevStored); serr != nil {
			restoreErrs = append(restoreErrs, fmt.Errorf("restore the stored configuration: %w", serr))
		}
	}
	if rerr := d.reconcile(ctx, prev); rerr != nil {
		restoreErrs = append(restoreErrs, fmt.Errorf("restore the previous configuration: %w", rerr))
	}
	d.cfg, d.raw = prev, prevRaw
	if len(restoreErrs) > 0 {
		d.bus.Publish("config.rollback.failed", errors.Join(restoreErrs...).Error(), nil)
		return fmt.Errorf("apply configuration: %w; restoring the previous configuration failed too: %w", err, errors.Join(restoreErrs...))
	}
	d.bus.Publish("config.rollback", "configuration not applied, previous configuration restored: "+err.Error(), nil)
	return fmt.Errorf("apply configuration (the previous configuration is still in force): %w", err)
}

// startTry arms the rollback of a TRY apply. Called with d.mu held.
func (d *Daemon) startTry(raw []byte, timeout time.Duration) {
	d.cancelTry()
	d.tryGen++
	gen := d.tryGen
	d.try = &tryState{
		raw:      raw,
		deadline: time.Now().Add(timeout),
		timer:    time.AfterFunc(timeout, func() { d.rollbackTry(gen) }),
	}
}

// cancelTry forgets a pending TRY apply. Called with d.mu held.
func (d *Daemon) cancelTry() {
	if d.try != nil {
		d.try.timer.Stop()
		d.try = nil
	}
}

// rollbackTry puts the stored configuration back in force when the TRY
// apply of generation gen was not confirmed in time.
func (d *Daemon) rollbackTry(gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.try == nil || d.tryGen != gen {
		return // confirmed, replaced or stopped meanwhile
	}
	d.try = nil
	raw, err := d.store.Load()
	if err != nil {
		d.log.Error("TRY rollback: cannot read the stored configuration", "err", err)
		d.bus.Publish("config.rollback.failed", "TRY rollback: "+err.Error(), nil)
		return
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		d.log.Error("TRY rollback: the stored configuration is invalid", "err", err)
		d.bus.Publish("config.rollback.failed", "TRY rollback: "+err.Error(), nil)
		return
	}
	if err := d.activate(context.Background(), cfg, raw, false); err != nil {
		d.log.Error("TRY rollback failed", "err", err)
		return
	}
	d.log.Warn("TRY configuration not confirmed in time: rolled back")
	d.bus.Publish("config.rollback", "TRY configuration not confirmed in time: rolled back to the stored configuration",
		map[string]string{"checksum": checksum(raw)})
}

// ConfirmConfiguration stores the configuration applied in TRY mode and
// cancels its rollback.
func (d *Daemon) ConfirmConfiguration(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.try == nil {
		return "", fmt.Errorf("%w: no configuration applied in TRY mode waits for confirmation", server.ErrPrecondition)
	}
	if err := d.store.Save(d.try.raw); err != nil {
		return "", err
	}
	sum := checksum(d.try.raw)
	d.cancelTry()
	d.bus.Publish("config.confirmed", "TRY configuration confirmed and stored", map[string]string{"checksum": sum})
	d.log.Info("TRY configuration confirmed", "checksum", sum)
	return "configuration confirmed", nil
}
