(function(){
  "use strict";
  var table=document.getElementById("studies");
  if(!table){return;}
  var tbody=table.tBodies[0], heads=table.tHead.rows[0].cells;
  var coll=new Intl.Collator(undefined,{numeric:true,sensitivity:"base"});
  var current=-1, dir=1;
  function key(cell){
    var v=cell.getAttribute("data-v");
    if(v!==null){var n=parseFloat(v);return isNaN(n)?null:n;}
    var t=cell.textContent.trim();return t===""?null:t;
  }
  function cmp(a,b){
    if(a===null||b===null){return a===null?(b===null?0:1):-1;}
    var d=(typeof a==="number"&&typeof b==="number")?(a<b?-1:a>b?1:0):coll.compare(String(a),String(b));
    return d*dir;
  }
  function sortBy(c){
    dir=(c===current)?-dir:1;current=c;
    var items=Array.prototype.map.call(tbody.rows,function(r,i){return [key(r.cells[c]),i,r];});
    items.sort(function(x,y){return cmp(x[0],y[0])||(x[1]-y[1]);});
    var frag=document.createDocumentFragment();
    items.forEach(function(it){frag.appendChild(it[2]);});
    tbody.appendChild(frag);
    for(var h=0;h<heads.length;h++){heads[h].removeAttribute("aria-sort");}
    heads[c].setAttribute("aria-sort",dir>0?"ascending":"descending");
  }
  for(var c=0;c<heads.length;c++){heads[c].addEventListener("click",sortBy.bind(null,c));}
  var q=document.getElementById("search"), show=document.getElementById("show"), count=document.getElementById("shown");
  function filter(){
    var text=(q.value||"").trim().toLowerCase(), which=show.value, n=0;
    Array.prototype.forEach.call(tbody.rows,function(r){
      var ok=(text===""||r.getAttribute("data-study").indexOf(text)>=0)&&
        (which==="all"||(which==="flagged"?r.hasAttribute("data-flagged"):r.getAttribute("data-status")===which));
      r.hidden=!ok;if(ok){n++;}
    });
    count.textContent=n+" of "+tbody.rows.length+" studies shown";
  }
  q.addEventListener("input",filter);show.addEventListener("change",filter);filter();
  document.querySelectorAll(".gallery img").forEach(function(img){
    img.addEventListener("click",function(){img.classList.toggle("big");});
  });
})();
