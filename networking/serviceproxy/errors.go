package serviceproxy

// ServiceError is the refusal of one Service by Sync or Update: the Service keeps
// its last good state (or stays absent) and the others are programmed. Sync and
// Update join one per refused Service into the error they return; ServiceErrors
// takes them out again.
type ServiceError struct {
	Key    ServiceKey // as given, with an IPv4 address unmapped
	Reason Refusal
	Err    error // what is wrong; its message names the Service
}

func (e *ServiceError) Error() string { return e.Err.Error() }

func (e *ServiceError) Unwrap() error { return e.Err }

// Refusal says why a Service was refused.
type Refusal uint8

const (
	// RefusedInvalid: the Service is not valid (no address, port 0, a
	// backend of the other family, more backends than a slot table holds,
	// listed twice, ...).
	RefusedInvalid Refusal = iota + 1
	// RefusedFull: a map, or the ID space of the services map, has no room
	// for it.
	RefusedFull
	// RefusedConflict: one of its frontends belongs to another Service.
	RefusedConflict
)

func (r Refusal) String() string {
	switch r {
	case RefusedInvalid:
		return "invalid"
	case RefusedFull:
		return "full"
	case RefusedConflict:
		return "conflict"
	}
	return "unknown"
}

// refused makes err the refusal of the Service with key k.
func refused(k ServiceKey, r Refusal, err error) *ServiceError {
	return &ServiceError{Key: unmappedKey(k), Reason: r, Err: err}
}

// ServiceErrors returns the refusals of single Services in err (an error that
// Sync or Update returned), in order. Other errors in err, such as a failed map
// write, concern no one Service and are not among them.
func ServiceErrors(err error) []*ServiceError {
	var out []*ServiceError
	walkErrors(err, func(se *ServiceError) { out = append(out, se) }, func(error) {})
	return out
}

// RefusalsOnly reports whether err holds nothing but refusals of single Services:
// no failed map write or other error that concerns no one Service.
func RefusalsOnly(err error) bool {
	only := err != nil
	walkErrors(err, func(*ServiceError) {}, func(error) { only = false })
	return only
}

// walkErrors calls refusal for every ServiceError in err's tree and other for
// every leaf of the tree that is not inside one.
func walkErrors(err error, refusal func(*ServiceError), other func(error)) {
	if err == nil {
		return
	}
	if se, ok := err.(*ServiceError); ok {
		refusal(se)
		return
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			walkErrors(e, refusal, other)
		}
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			walkErrors(inner, refusal, other)
			return
		}
		other(err)
	default:
		other(err)
	}
}
