package config

import "reflect"

// RedactedValue is the text that replaces secrets in Redacted.
const RedactedValue = "REDACTED"

// Redacted returns a deep copy of the config with every private key, token
// and secret replaced by "REDACTED" (empty ones stay empty, so the copy still
// shows which secrets are present). Certificates are public and kept.
// Service environment values are kept: do not put secrets there.
func (c *Config) Redacted() *Config {
	out := c.DeepCopy()
	if out.Machine == nil {
		return out
	}
	m, cl := &out.Machine.Machine, &out.Machine.Cluster
	for _, s := range []*string{
		&m.Token,
		&m.CA.Key,
		&cl.CA.Key,
		&cl.Etcd.CA.Key,
		&cl.AggregatorCA.Key,
		&cl.ServiceAccount.Key,
		&cl.Token,
		&cl.SecretboxEncryptionSecret,
	} {
		if *s != "" {
			*s = RedactedValue
		}
	}
	return out
}

// DeepCopy returns a copy of the config that shares no memory with it.
func (c *Config) DeepCopy() *Config {
	if c == nil {
		return nil
	}
	out := reflect.New(reflect.TypeFor[Config]()).Elem()
	deepCopy(out, reflect.ValueOf(c).Elem())
	cp := out.Addr().Interface().(*Config)
	return cp
}

func deepCopy(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		n := reflect.New(src.Type().Elem())
		deepCopy(n.Elem(), src.Elem())
		dst.Set(n)
	case reflect.Struct:
		for i := range src.NumField() {
			if src.Type().Field(i).IsExported() {
				deepCopy(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		n := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			deepCopy(n.Index(i), src.Index(i))
		}
		dst.Set(n)
	case reflect.Map:
		if src.IsNil() {
			return
		}
		n := reflect.MakeMapWithSize(src.Type(), src.Len())
		iter := src.MapRange()
		for iter.Next() {
			e := reflect.New(src.Type().Elem()).Elem()
			deepCopy(e, iter.Value())
			n.SetMapIndex(iter.Key(), e)
		}
		dst.Set(n)
	default:
		dst.Set(src)
	}
}
