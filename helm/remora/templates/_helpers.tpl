{{/* Names and labels shared by the templates. */}}

{{- define "remora.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remora.labels" -}}
helm.sh/chart: {{ include "remora.chart" . }}
app.kubernetes.io/part-of: remora
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "remora.controlSelector" -}}
app.kubernetes.io/name: remora-control
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The control plane's Service DNS names: what agents dial and what the webhook certificate names. */}}
{{- define "remora.controlHost" -}}
remora-control.{{ .Release.Namespace }}.svc
{{- end }}

{{- define "remora.proxyImage" -}}
{{ .Values.proxy.image.repository }}:{{ .Values.proxy.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "remora.controlImage" -}}
{{ .Values.controlPlane.image.repository }}:{{ .Values.controlPlane.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Remora's root namespace is fixed (MeshTLS and the mesh-wide Telemetry live there, and the control
plane's certificate names remora-control.remora-system.svc): refuse any other release namespace.
*/}}
{{- define "remora.checkNamespace" -}}
{{- if ne .Release.Namespace "remora-system" -}}
{{- fail (printf "remora must be installed in the namespace remora-system (Remora's root namespace), not %q: helm install remora helm/remora --namespace remora-system --create-namespace" .Release.Namespace) -}}
{{- end -}}
{{- end }}

{{/*
The identity material as a dict {anchor, cert, key} (cert and key empty with issuer.existingSecret),
computed once per render and kept in .Values._remoraIdentity so that the Secret, the trust-anchor
ConfigMap and the webhook's caBundle agree:
- issuer.existingSecret: anchor from identity.trustAnchorPEM;
- issuer.certPEM/keyPEM: all three from values;
- otherwise the Secret remora-identity as it is in the cluster (helm lookup; upgrades keep the CA),
  or a new self-signed ECDSA P-256 CA (10 years) that is both anchor and issuer.
*/}}
{{- define "remora.identity" -}}
{{- if not (hasKey .Values "_remoraIdentity") -}}
{{- $id := .Values.identity -}}
{{- $out := dict -}}
{{- if or $id.issuer.existingSecret $id.issuer.certPEM $id.issuer.keyPEM -}}
{{- if not $id.trustAnchorPEM -}}
{{- fail "identity.trustAnchorPEM is required when the issuer is given (identity.issuer.certPEM/keyPEM or identity.issuer.existingSecret)" -}}
{{- end -}}
{{- if and $id.issuer.existingSecret (or $id.issuer.certPEM $id.issuer.keyPEM) -}}
{{- fail "give either identity.issuer.existingSecret or identity.issuer.certPEM and keyPEM, not both" -}}
{{- end -}}
{{- if and (not $id.issuer.existingSecret) (not (and $id.issuer.certPEM $id.issuer.keyPEM)) -}}
{{- fail "identity.issuer.certPEM and identity.issuer.keyPEM must be given together" -}}
{{- end -}}
{{- $_ := set $out "anchor" $id.trustAnchorPEM -}}
{{- $_ := set $out "cert" $id.issuer.certPEM -}}
{{- $_ := set $out "key" $id.issuer.keyPEM -}}
{{- else if $id.trustAnchorPEM -}}
{{- fail "identity.trustAnchorPEM needs its issuer: identity.issuer.certPEM and keyPEM, or identity.issuer.existingSecret" -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace "remora-identity" -}}
{{- if and $existing $existing.data (index $existing.data "ca.crt") -}}
{{- $_ := set $out "anchor" (index $existing.data "ca.crt" | b64dec) -}}
{{- $_ := set $out "cert" (index $existing.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "key" (index $existing.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $ca := genCAWithKey "remora trust anchor" 3650 (genPrivateKey "ecdsa") -}}
{{- $_ := set $out "anchor" $ca.Cert -}}
{{- $_ := set $out "cert" $ca.Cert -}}
{{- $_ := set $out "key" $ca.Key -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "_remoraIdentity" $out -}}
{{- end -}}
{{- toJson .Values._remoraIdentity -}}
{{- end }}

{{- define "remora.trustAnchor" -}}
{{- (include "remora.identity" . | fromJson).anchor -}}
{{- end }}

{{/* The admin credential: "rma1." + 64 lower-case hex digits, kept across upgrades (lookup). */}}
{{- define "remora.adminToken" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace "remora-admin-token" -}}
{{- if and $existing $existing.data (index $existing.data "token") -}}
{{- index $existing.data "token" | b64dec -}}
{{- else -}}
{{- printf "rma1.%s" (sha256sum (randAlphaNum 64)) -}}
{{- end -}}
{{- end }}

{{/* The injector configuration (docs/injection.md), from the proxy values. */}}
{{- define "remora.injectorConfig" -}}
proxyImage: {{ include "remora.proxyImage" . | quote }}
proxyImagePullPolicy: {{ .Values.proxy.image.pullPolicy }}
initImage: {{ .Values.proxy.initImage | quote }}
controlAddress: {{ printf "%s:15010" (include "remora.controlHost" .) | quote }}
proxyUID: {{ int64 .Values.proxy.uid }}
nativeSidecar: {{ .Values.proxy.nativeSidecar }}
outboundGraceMs: {{ int64 .Values.proxy.outboundGraceMs }}
logLevel: {{ .Values.proxy.logLevel }}
opaquePorts: {{ .Values.proxy.opaquePorts | quote }}
skipInboundPorts: {{ .Values.proxy.skipInboundPorts | quote }}
skipOutboundPorts: {{ .Values.proxy.skipOutboundPorts | quote }}
resources:
{{ toYaml .Values.proxy.resources | indent 2 }}
{{- end }}
