import sys, time, torch, timm
sys.path.insert(0, ".")
from flatbench import create_attack
dev = torch.device("cuda")
torch.manual_seed(0)
for arch, size in (("resnet50", 224), ("inception_v3", 299)):
    model = timm.create_model(arch, pretrained=False).to(dev).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, size, size, generator=g).to(dev), torch.randint(0, 1000, (16,), generator=g).to(dev)
    for method, kw in (("pgn", dict(n_samples=20)), ("pgn_dim_tim", dict(n_samples=20)), ("mi_dim_tim", {}), ("gnp", {})):
        for amp in (None, "bf16"):
            runs = []
            for _ in range(2):
                a = create_attack(method, model, eps=16 / 255, steps=3, amp=amp, **kw)
                t0 = time.perf_counter(); runs.append((a(x, y, seed=0) * 255).round()); torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            print(f"{arch} {method} amp={amp}: chunk {a.chunk}, {a.memory_format}; differing 8-bit pixels between two "
                  f"identical calls: {(runs[0] != runs[1]).sum().item()} of {runs[0].numel()} ({dt:.2f} s per call)", flush=True)
    print("cudnn.deterministic after the calls (the caller's, restored):", torch.backends.cudnn.deterministic)
