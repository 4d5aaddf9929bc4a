#!/usr/bin/env python3
# Host-side check of the tile loops of kernels/attention.cu (forward, dq, dk/dv): it replays each kernel's
# loop bounds (first_visible_key, kv_end, q_end, k_valid/q_valid, out-of-row rows as segment -1) and asserts
# that every visible (query, key) pair is visited exactly once. Keep the constants in step with the kernels.
# Run: python3 dev/cuda/check_attention_tiles.py
import random
def visible(i,j,si,sj,w): return si>=0 and si==sj and j<=i and (w<=0 or i-j<w)
def first_key(q0,w): return max(0,q0-w+1) if w>0 else 0
def check(T,w,seg):
    vis={(i,j) for i in range(T) for j in range(T) if visible(i,j,seg[i],seg[j],w)}
    for name,BQ,BK in (("fwd",64,64),("dq",64,32)):
        cov={}
        for q0 in range(0,T,BQ):
            qv=min(BQ,T-q0); end=q0+qv; k0=first_key(q0,w)
            while k0<end:
                kv=min(BK,T-k0)
                for a in range(BQ):
                    for b in range(BK):
                        i,j=q0+a,k0+b
                        si=seg[i] if i<T else -1; sj=seg[j] if b<kv else -1
                        if visible(i,j,si,sj,w): cov[(i,j)]=cov.get((i,j),0)+1
                k0+=BK
        assert set(cov)==vis and all(c==1 for c in cov.values()), name
    cov={}
    BK,BQ=64,32
    for k0 in range(0,T,BK):
        kv=min(BK,T-k0); qend=min(T,k0+kv-1+w) if w>0 else T
        q0=k0
        while q0<qend:
            qv=min(BQ,T-q0)
            for a in range(BK):
                for b in range(BQ):
                    j,i=k0+a,q0+b
                    sj=seg[j] if j<T else -1; si=seg[i] if b<qv else -1
                    if visible(i,j,si,sj,w): cov[(i,j)]=cov.get((i,j),0)+1
            q0+=BQ
    assert set(cov)==vis and all(c==1 for c in cov.values()), "dkv"
random.seed(1)
for T,w in [(1,0),(67,0),(130,37),(100,0),(200,64),(257,100),(129,1),(65,64),(300,200)]:
    seg=[];s=0
    while len(seg)<T:
        n=random.randint(1,T); seg+= [s]*n; s+=1
    seg=seg[:T]
    pad=random.randint(0,T//4); seg=seg[:T-pad]+[-1]*pad
    check(T,w,seg)
print("all tile loops cover every visible pair exactly once")
