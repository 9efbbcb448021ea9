// Package agent feeds Kiln's eBPF service proxy (package serviceproxy) from the
// Kubernetes API, in kube-proxy's place: client-go shared informers on Services and
// discovery/v1 EndpointSlices, joined by the kubernetes.io/service-name label, are
// translated into serviceproxy.Service values and programmed through a small
// Datapath interface that *serviceproxy.Proxy satisfies.
//
// # Translation
//
// Each ClusterIP of a Service (spec.clusterIPs, both families) times each of its
// ports gives one serviceproxy.ServiceKey. TCP and UDP ports are programmed; SCTP
// ports are skipped and logged. Headless Services (clusterIP None), Services without
// a ClusterIP and ExternalName Services are skipped. A port's backends come from the
// EndpointSlices of the Service's address family whose port has the Service port's
// name and protocol: that slice port's number is the resolved targetPort (a named
// targetPort resolves per endpoint, which is why it is read from the slice).
// sessionAffinity ClientIP becomes Service.Affinity with its timeout (default 10800 s).
//
// Endpoints follow kube-proxy's rule: an endpoint is used when it is ready (a missing
// ready condition counts as ready). Only when a Service port has no ready endpoint
// at all are the endpoints that are serving and terminating used instead, so that
// connections drain to pods that are shutting down rather than being refused. A
// Service with internalTrafficPolicy Local uses only the endpoints on Config.NodeName
// (same ready-then-terminating rule), when NodeName is set. Only an endpoint's first
// address is used, as kube-proxy does.
//
// # Frontends outside the node
//
// Each serviceproxy.Service also carries what serves it from outside the node, for
// its own port and family, as kube-proxy reads it: spec.ports[].nodePort for the
// NodePort and LoadBalancer types (Service.NodePort), spec.externalIPs for any
// type (ExternalIPs), status.loadBalancer.ingress[].ip for the LoadBalancer type
// except ingresses with ipMode Proxy, whose load balancer does not send that IP
// to the node (LoadBalancerIPs), and spec.externalTrafficPolicy (ExternalPolicy,
// Local only for a Service that has one of these frontends). Addresses of the
// other family are left to the other ClusterIP's Service; addresses that do not
// parse are logged and skipped. LocalBackends are the chosen backends whose
// endpoint's nodeName is Config.NodeName, for every Service (the datapath keeps
// locality per backend address, so Services that share a backend must agree).
// A LoadBalancer Service with policy Local also carries spec.healthCheckNodePort,
// and Config.Health (a serviceproxy.HealthServer) is given the desired Services
// that have one whenever one of them changes.
//
// A frontend (NodePort, externalIP:port or load balancer IP:port, per protocol)
// served by one Service is not given to another: the second is programmed without
// it, counted as duplicate_frontend, and gains it when the first lets go. The
// datapath applies an Update's upserts before its deletes and refuses a frontend
// another service still holds, so upserts that gain a frontend are sent in a
// second Update after the ones that may free it.
//
// Limits: one Backends list serves the ClusterIP and the frontends, so a Service
// with internalTrafficPolicy Local serves only this node's endpoints on its
// NodePort too; and under externalTrafficPolicy Local, when this node has only
// terminating endpoints while other nodes have ready ones, the frontends have none
// (kube-proxy would use the local terminating ones).
//
// How a new flow to a frontend picks its backend (random, or Maglev consistent
// hashing: serviceproxy.Config.ExternalLB) is the datapath's, chosen where it is
// opened (kiln-proxy --external-lb); the agent needs no setting for it. Maglev keeps
// a flow on one backend across nodes only as far as the nodes program the same
// backends, which the translation above does for every node alike except under
// externalTrafficPolicy Local (each node its own endpoints, by design) and
// internalTrafficPolicy Local (see Limits).
//
// Topology hints (endpoint.hints.forZones/forNodes, trafficDistribution) are
// ignored: every node balances over all of a Service's endpoints. Honouring them
// needs the node's zone label and kube-proxy's safety fallbacks; the datapath
// balances at the socket, before routing, so it loses nothing by sending traffic to
// any endpoint.
//
// # Programming
//
// The agent keeps a mirror of what the datapath holds. On start it waits for both
// informer caches, adopts the datapath's current state (serviceproxy.Open already
// adopted and cleaned the pinned maps) and programs the whole desired set with one
// Sync, which also removes whatever is stale. After that, events only mark Services
// dirty; a single loop recomputes the dirty Services, diffs them against the mirror
// and sends only what changed with Update. Flushes are at least
// Config.MinInterval apart, so a burst of thousands of events becomes a handful of
// Update calls. A ServiceKey is deleted only when its Service is gone (or no longer
// has that frontend); a Service whose EndpointSlices disappear is programmed with no
// backends, which refuses connections, as kube-proxy does.
//
// # Safety
//
// A Service whose translation fails (a malformed address or port in an
// EndpointSlice, more backends than Limits.PerService, a ClusterIP that does not
// parse, a frontend another Service already claims) and a Service the datapath
// refuses are logged and counted in kiln_proxy_errors_total by reason; that
// Service keeps its last good state and every other Service is programmed as
// usual. The datapath's refusals come typed (serviceproxy.ServiceError): a full
// map counts as map_full, a frontend conflict as duplicate_frontend, a Service it
// finds invalid as invalid_service, and a failed map write as datapath. A
// translation failure is counted once until it changes or the Service is fixed,
// however often the Service is recomputed. EndpointSlices whose Service still
// does not exist after Config.RetryInterval (creation and garbage collection race
// between the two informers) are logged and counted once per slice version. Services the datapath refused are retried every
// Config.RetryInterval.
package agent
