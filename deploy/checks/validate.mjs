// Validates custom resources against their CRDs' schemas (KEDA, Prometheus operator).
// Reads a JSON array of manifests on stdin; prints a JSON array of {kind, name, errors}.
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": monitoring,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((manifest) => {
  const group = models[manifest.apiVersion];
  const Model = group && group[manifest.kind];
  const name = manifest.metadata?.name ?? "";
  if (!Model) {
    return { kind: manifest.kind, name, errors: [`no schema for ${manifest.apiVersion} ${manifest.kind}`] };
  }
  try {
    new Model(manifest).validate();
    return { kind: manifest.kind, name, errors: [] };
  } catch (error) {
    const details = error.errors ?? [error];
    return { kind: manifest.kind, name, errors: details.map((e) => `${e.instancePath ?? ""} ${e.message}`) };
  }
});
process.stdout.write(JSON.stringify(results));
