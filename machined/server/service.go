package server

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/api/roles"
	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// maxChunk bounds the bytes of log lines sent in one LogChunk.
const maxChunk = 64 << 10

// service translates between the wire and the Machine. Authorization has
// happened before a handler runs; errors are mapped after it returns.
type service struct {
	machine.UnimplementedMachineServiceServer
	s *Server
}

func (v *service) ApplyConfiguration(ctx context.Context, req *machine.ApplyConfigurationRequest) (*machine.ApplyConfigurationResponse, error) {
	if _, ok := machine.ApplyMode_name[int32(req.GetMode())]; !ok {
		return nil, fmt.Errorf("%w: unknown apply mode %d", ErrInvalidArgument, req.GetMode())
	}
	ar := ApplyRequest{Data: req.GetData(), Mode: req.GetMode(), DryRun: req.GetDryRun()}
	if d := req.GetTryTimeout(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, fmt.Errorf("%w: try_timeout: %v", ErrInvalidArgument, err)
		}
		if ar.TryTimeout = d.AsDuration(); ar.TryTimeout < 0 {
			return nil, fmt.Errorf("%w: try_timeout %s is negative", ErrInvalidArgument, ar.TryTimeout)
		}
	}
	res, err := v.s.m.ApplyConfiguration(ctx, ar)
	if err != nil {
		return nil, err
	}
	return &machine.ApplyConfigurationResponse{
		Mode:           res.Mode,
		RebootRequired: res.RebootRequired,
		Diff:           res.Diff,
		Message:        res.Message,
		Warnings:       res.Warnings,
	}, nil
}

func (v *service) ConfirmConfiguration(ctx context.Context, _ *machine.ConfirmConfigurationRequest) (*machine.ConfirmConfigurationResponse, error) {
	msg, err := v.s.m.ConfirmConfiguration(ctx)
	if err != nil {
		return nil, err
	}
	return &machine.ConfirmConfigurationResponse{Message: msg}, nil
}

func (v *service) GetConfig(ctx context.Context, _ *machine.GetConfigRequest) (*machine.GetConfigResponse, error) {
	redact := !slices.Contains(CallerRoles(ctx), roles.Admin)
	st, err := v.s.m.Config(ctx, redact)
	if err != nil {
		return nil, err
	}
	if redact && !st.Redacted {
		// Never hand secrets to a non-admin, whatever the Machine did.
		return nil, fmt.Errorf("machine returned an unredacted configuration to a non-admin caller")
	}
	return &machine.GetConfigResponse{
		Data:          st.Data,
		Redacted:      st.Redacted,
		Checksum:      st.Checksum,
		StagedPending: st.StagedPending,
	}, nil
}

func (v *service) Version(ctx context.Context, _ *machine.VersionRequest) (*machine.VersionResponse, error) {
	ver, err := v.s.m.Version(ctx)
	if err != nil {
		return nil, err
	}
	return &machine.VersionResponse{
		Version: &machine.VersionInfo{
			Tag:       ver.Tag,
			Sha:       ver.SHA,
			GoVersion: ver.GoVersion,
			Os:        ver.OS,
			Arch:      ver.Arch,
		},
		// The server's own mode is the truth callers act on.
		Maintenance: v.s.Maintenance(),
		Hostname:    ver.Hostname,
		Platform:    ver.Platform,
	}, nil
}

func (v *service) Disks(ctx context.Context, _ *machine.DisksRequest) (*machine.DisksResponse, error) {
	disks, err := v.s.m.Disks(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.DisksResponse{}
	for _, d := range disks {
		resp.Disks = append(resp.Disks, &machine.Disk{
			Name:       d.Name,
			SizeBytes:  d.SizeBytes,
			Model:      d.Model,
			Serial:     d.Serial,
			Rotational: d.Rotational,
			ReadOnly:   d.ReadOnly,
			SystemDisk: d.SystemDisk,
		})
	}
	return resp, nil
}

func (v *service) ServiceList(ctx context.Context, _ *machine.ServiceListRequest) (*machine.ServiceListResponse, error) {
	list, err := v.s.m.Services(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.ServiceListResponse{}
	for _, st := range list {
		resp.Services = append(resp.Services, serviceInfo(st))
	}
	return resp, nil
}

func serviceInfo(st supervisor.Status) *machine.ServiceInfo {
	info := &machine.ServiceInfo{
		Id:        st.ID,
		Kind:      st.Kind,
		State:     fmt.Sprint(st.State),
		Health:    &machine.ServiceHealth{},
		DependsOn: st.DependsOn,
		Pid:       int32(st.PID),
		Restarts:  uint32(st.Restarts),
	}
	if !st.Since.IsZero() {
		info.StateSince = timestamppb.New(st.Since)
	}
	if st.Healthy != nil {
		info.Health.Checked = true
		info.Health.Healthy = *st.Healthy
		info.Health.LastMessage = st.HealthMessage
		if !st.HealthChanged.IsZero() {
			info.Health.LastChange = timestamppb.New(st.HealthChanged)
		}
	}
	for _, e := range st.Events {
		info.Events = append(info.Events, &machine.ServiceEvent{
			Time:    timestamppb.New(e.Time),
			State:   fmt.Sprint(e.State),
			Message: e.Message,
		})
	}
	return info
}

func (v *service) ServiceStart(ctx context.Context, req *machine.ServiceRequest) (*machine.ServiceResponse, error) {
	return serviceAction(ctx, req, "start", "started", v.s.m.StartService)
}

func (v *service) ServiceStop(ctx context.Context, req *machine.ServiceRequest) (*machine.ServiceResponse, error) {
	return serviceAction(ctx, req, "stop", "stopped", v.s.m.StopService)
}

func (v *service) ServiceRestart(ctx context.Context, req *machine.ServiceRequest) (*machine.ServiceResponse, error) {
	return serviceAction(ctx, req, "restart", "restarted", v.s.m.RestartService)
}

func serviceAction(ctx context.Context, req *machine.ServiceRequest, verb, done string, f func(context.Context, string) error) (*machine.ServiceResponse, error) {
	id := req.GetId()
	if id == "" {
		return nil, fmt.Errorf("%w: service id is empty", ErrInvalidArgument)
	}
	if err := f(ctx, id); err != nil {
		return nil, fmt.Errorf("%s service %s: %w", verb, id, err)
	}
	return &machine.ServiceResponse{Message: fmt.Sprintf("service %s %s", id, done)}, nil
}

func (v *service) Logs(req *machine.LogsRequest, stream grpc.ServerStreamingServer[machine.LogChunk]) error {
	ctx, cancel := v.s.streamContext(stream.Context())
	defer cancel()
	id := req.GetId()
	if id == "" {
		return fmt.Errorf("%w: service id is empty", ErrInvalidArgument)
	}
	log, err := v.s.m.ServiceLog(ctx, id)
	if err != nil {
		return fmt.Errorf("logs of service %s: %w", id, err)
	}
	var (
		tail  [][]byte
		lines <-chan []byte
	)
	if req.GetFollow() {
		var unsubscribe func()
		tail, lines, unsubscribe = log.TailAndSubscribe(int(req.GetTailLines()))
		defer unsubscribe()
	} else {
		tail = log.Tail(int(req.GetTailLines()))
	}
	var buf []byte
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := stream.Send(&machine.LogChunk{Data: buf})
		buf = nil
		return err
	}
	for _, l := range tail {
		if len(buf)+len(l) > maxChunk {
			if err := flush(); err != nil {
				return err
			}
		}
		buf = append(buf, l...)
	}
	if err := flush(); err != nil {
		return err
	}
	if lines == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil // the log was closed: the service is gone
			}
			buf = append(buf, l...)
			// Batch what is already waiting into the same chunk.
		drain:
			for len(buf) < maxChunk {
				select {
				case l, ok := <-lines:
					if !ok {
						return flush()
					}
					buf = append(buf, l...)
				default:
					break drain
				}
			}
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func (v *service) Events(req *machine.EventsRequest, stream grpc.ServerStreamingServer[machine.Event]) error {
	ctx, cancel := v.s.streamContext(stream.Context())
	defer cancel()
	bus := v.s.m.Events()
	if !req.GetFollow() {
		for _, e := range bus.Tail(int(req.GetTailEvents())) {
			if err := stream.Send(eventMsg(e)); err != nil {
				return err
			}
		}
		return nil
	}
	sub := bus.Subscribe(int(req.GetTailEvents()))
	defer sub.Close()
	for {
		evs, missed, err := sub.Next(ctx)
		if err != nil {
			return nil // the client went away or the server stops
		}
		if missed > 0 {
			// Tell the follower about the gap instead of hiding it.
			lost := &machine.Event{
				Time:    timestamppb.New(v.s.now()),
				Type:    "events.missed",
				Message: fmt.Sprintf("%d events were dropped because this follower fell behind", missed),
			}
			if err := stream.Send(lost); err != nil {
				return err
			}
		}
		for _, e := range evs {
			if err := stream.Send(eventMsg(e)); err != nil {
				return err
			}
		}
	}
}

func eventMsg(e events.Event) *machine.Event {
	return &machine.Event{
		Id:         e.ID,
		Time:       timestamppb.New(e.Time),
		Type:       e.Type,
		Message:    e.Message,
		Attributes: e.Attrs,
	}
}

func (v *service) Dmesg(req *machine.DmesgRequest, stream grpc.ServerStreamingServer[machine.DmesgEntry]) error {
	ctx, cancel := v.s.streamContext(stream.Context())
	defer cancel()
	return readKmsg(ctx, v.s.kmsgPath, req.GetFollow(), int(req.GetTail()), func(r kmsgRecord) error {
		return stream.Send(&machine.DmesgEntry{
			Seq:       r.Seq,
			SinceBoot: durationpb.New(r.SinceBoot),
			Priority:  r.Priority,
			Facility:  r.Facility,
			Message:   r.Message,
		})
	})
}

func (v *service) Reboot(ctx context.Context, _ *machine.RebootRequest) (*machine.RebootResponse, error) {
	if err := v.s.m.Reboot(ctx); err != nil {
		return nil, err
	}
	return &machine.RebootResponse{Message: "rebooting"}, nil
}

func (v *service) Shutdown(ctx context.Context, _ *machine.ShutdownRequest) (*machine.ShutdownResponse, error) {
	if err := v.s.m.Shutdown(ctx); err != nil {
		return nil, err
	}
	return &machine.ShutdownResponse{Message: "shutting down"}, nil
}

func (v *service) Mounts(ctx context.Context, _ *machine.MountsRequest) (*machine.MountsResponse, error) {
	mounts, err := v.s.m.Mounts(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.MountsResponse{}
	for _, m := range mounts {
		resp.Mounts = append(resp.Mounts, &machine.Mount{
			Source:  m.Source,
			Target:  m.Target,
			Fstype:  m.FSType,
			Options: m.Options,
		})
	}
	return resp, nil
}

func (v *service) Processes(ctx context.Context, _ *machine.ProcessesRequest) (*machine.ProcessesResponse, error) {
	procs, err := v.s.m.Processes(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.ProcessesResponse{}
	for _, p := range procs {
		resp.Processes = append(resp.Processes, &machine.Process{
			Pid:         int32(p.PID),
			Ppid:        int32(p.PPID),
			Name:        p.Name,
			CommandLine: p.CommandLine,
			State:       p.State,
			RssBytes:    p.RSSBytes,
			UserCpu:     durationpb.New(p.UserCPU),
			SystemCpu:   durationpb.New(p.SystemCPU),
		})
	}
	return resp, nil
}

func (v *service) Netstat(ctx context.Context, _ *machine.NetstatRequest) (*machine.NetstatResponse, error) {
	socks, err := v.s.m.Netstat(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.NetstatResponse{}
	for _, s := range socks {
		resp.Sockets = append(resp.Sockets, &machine.Socket{
			Protocol:     s.Protocol,
			LocalAddress: s.Local.Addr().String(),
			LocalPort:    uint32(s.Local.Port()),
			State:        s.State,
		})
	}
	return resp, nil
}

func (v *service) DebugAction(ctx context.Context, req *machine.DebugActionRequest) (*machine.DebugActionResponse, error) {
	action := req.GetAction()
	if action == "" {
		return nil, fmt.Errorf("%w: debug action is empty", ErrInvalidArgument)
	}
	msg, err := v.s.m.DebugAction(ctx, action)
	if err != nil {
		return nil, fmt.Errorf("debug action %q: %w", action, err)
	}
	return &machine.DebugActionResponse{Message: msg}, nil
}
